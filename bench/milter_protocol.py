"""What the milter costs per message at its socket, without Postfix: a client speaking
the milter protocol as Postfix does (protocol 6, the same "no reply" steps, macros) sends
the same messages over one connection, one at a time, and times each from MAIL to the
end-of-message answer.

Two kinds of message: to an address that is no alias (the milter looks it up and lets
it pass: the protocol and adapter cost, next to nothing else) and to an alias (the whole
mail path: scan, checks, seal, events). With ``--compare-tree DIR`` the milter of another
checkout runs too, in the same run, alternating rounds.

    python bench/milter_protocol.py [--messages 300] [--rounds 3] [--compare-tree DIR]
    python bench/milter_protocol.py --protocol-only   # in-process: frames, no-op adapter
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sqlalchemy import select  # noqa: E402

from aliasd.config import load_settings  # noqa: E402
from aliasd.core import aliases as core  # noqa: E402
from aliasd.db import Database  # noqa: E402
from aliasd.models import User  # noqa: E402
from tests.harness.dns import DnsServer  # noqa: E402
from tests.harness.net import free_port, wait_for_port  # noqa: E402

ALIAS = "github.com@example.net"
# What Postfix 3.7 offers: every action, every protocol step.
OFFER = struct.pack(">III", 6, 0x1FF, 0x1FFFFF)


def frame(code: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + code + data


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.sock.sendall(frame(b"O", OFFER))
        _, data = self.read()
        self.nr = struct.unpack(">III", data[:12])[2]
        self.send(frame(b"D", b"Cj\0mx.example.net\0{daemon_name}\0smtpd\0")
                  + frame(b"C", b"client.example\0" + b"4" + struct.pack(">H", 40000)
                          + b"192.0.2.10\0"), b"C")
        self.send(frame(b"H", b"client.example\0"), b"H")

    def read(self) -> tuple[bytes, bytes]:
        while len(self.buf) < 4 or len(self.buf) < 4 + struct.unpack(">I", self.buf[:4])[0]:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("milter closed the connection")
            self.buf += chunk
        (length,) = struct.unpack(">I", self.buf[:4])
        code, data = self.buf[4:5], self.buf[5:4 + length]
        self.buf = self.buf[4 + length:]
        return code, data

    def send(self, data: bytes, step: bytes) -> None:
        self.sock.sendall(data)
        flag = {b"C": 1 << 12, b"H": 1 << 13, b"M": 1 << 14, b"R": 1 << 15, b"T": 1 << 16,
                b"L": 1 << 7, b"N": 1 << 18, b"B": 1 << 19}[step]
        if not self.nr & flag:
            self.read()

    def message(self, sender: str, rcpt: str, raw: bytes, queue_id: str) -> bytes:
        """Send one message as Postfix does (no waiting on "no reply" steps); its answer."""
        self.sock.sendall(message_frames(raw, sender, rcpt, queue_id))
        for flag in (1 << 14, 1 << 15, 1 << 16):  # MAIL, RCPT, DATA answered unless "no reply"
            if not self.nr & flag:
                self.read()
        while True:
            code, _ = self.read()
            if code in (b"a", b"r", b"t", b"d", b"y"):
                return code


def message_frames(raw: bytes, sender: str, rcpt: str, queue_id: str) -> bytes:
    """One message as Postfix sends it after MAIL FROM: macros, steps, headers, body."""
    head, _, body = raw.partition(b"\n\n")
    headers: list[list[bytes]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1][1] += b"\n" + line
        elif b":" in line:
            name, _, value = line.partition(b":")
            headers.append([name, value.lstrip()])
    body = body.replace(b"\n", b"\r\n")
    q = queue_id.encode()
    return b"".join([
        frame(b"D", b"Mi\0" + q + b"\0"), frame(b"M", f"<{sender}>\0".encode()),
        frame(b"R", f"<{rcpt}>\0".encode()), frame(b"D", b"Ti\0" + q + b"\0"), frame(b"T"),
        *(frame(b"L", n + b"\0" + v + b"\0") for n, v in headers), frame(b"N"),
        *(frame(b"B", body[i:i + 65535]) for i in range(0, len(body), 65535)),
        frame(b"D", b"Ei\0" + q + b"\0"), frame(b"E")])


def protocol_only(messages: int) -> None:
    """The connection's own work per message: frames cut, decoded and dispatched to an
    adapter that does nothing, the end of message run inline, the answer encoded."""
    import asyncio
    import concurrent.futures

    from corpus import load

    from aliasd.milter.connection import MilterConnection

    raw = [s for s in load() if not s.is_spam][3].raw
    data = message_frames(raw, "a@b.example", ALIAS, "Q1")

    class Idle:
        def __getattr__(self, name):
            return lambda *args: "accept" if name == "eom" else None

    class Inline(concurrent.futures.Executor):
        def submit(self, fn, *args, **kwargs):
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_result(fn(*args))
            return future

    class Sink:
        def write(self, data): pass
        def get_extra_info(self, name): return None
        def pause_reading(self): pass
        def resume_reading(self): pass
        def is_closing(self): return False

    async def run() -> float:
        conn = MilterConnection(Idle, Inline())
        conn.connection_made(Sink())
        conn.data_received(frame(b"O", OFFER))
        t0 = time.perf_counter()
        for _ in range(messages):
            conn.data_received(data)
            await asyncio.sleep(0)
        return (time.perf_counter() - t0) / messages

    per = asyncio.run(run())
    from aliasd.milter.protocol import FrameReader

    count = len(FrameReader().feed(data))
    print(f"protocol only: {per * 1e6:.0f} µs per message ({count} frames, {len(data)} bytes), "
          f"load {os.getloadavg()[0]:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--compare-tree", default="")
    ap.add_argument("--protocol-only", action="store_true")
    ap.add_argument("--connection-per-message", action="store_true",
                    help="a new connection (negotiation, connect, helo) for each message, "
                         "as Postfix opens one per SMTP session")
    args = ap.parse_args()
    if args.protocol_only:
        protocol_only(max(args.messages, 3000))
        return
    from corpus import load

    samples = [s for s in load() if s.is_spam][: args.files // 2] + \
        [s for s in load() if not s.is_spam][: args.files // 2]
    base = Path(tempfile.mkdtemp(prefix="aliasd-bench-milterproto-"))
    db_url = f"sqlite:///{base / 'aliasd.db'}"
    db = Database(db_url)
    db.upgrade()
    with db.session() as s:
        if not s.scalar(select(User).where(User.username == "alice")):
            alice = core.create_user(s, "alice", "alice@real.example")
            core.create_domain(s, "example.net", alice)
            core.create_alias(s, ALIAS, alice, site="github.com")
    dns = DnsServer(ttl=300).start()
    settings = load_settings(environ={}, data_dir=str(base / "data"), database_url=db_url,
                             dns_resolver=dns.address)
    from aliasd.mailauth import keys

    for key in keys.signing_keys(settings, "example.net"):
        dns.add(key.dns_name, "TXT", key.dns_txt())
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIASD_")}
    env.update(ALIASD_DATA_DIR=settings.data_dir, ALIASD_DATABASE_URL=db_url,
               ALIASD_DNS_RESOLVER=dns.address, ALIASD_AUTHSERV_ID="mx.example.net",
               ALIASD_AUTOBLOCK_ENABLED="false", ALIASD_BLOCKLIST_RELOAD_COMMAND="true")
    trees = {"this": str(ROOT)}
    if args.compare_tree:
        trees["tree"] = str(Path(args.compare_tree).resolve())
    procs, ports = [], {}
    try:
        for name, tree in trees.items():
            port = ports[name] = free_port()
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "aliasd", "milter", "--listen", f"127.0.0.1:{port}",
                 "--workers", "1", "--log-level", "WARNING"], env={**env, "PYTHONPATH": tree},
                cwd=tree, stdout=open(base / f"milter-{name}.log", "wb"),  # noqa: SIM115
                stderr=subprocess.STDOUT))
            wait_for_port(port, timeout=120)
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for name, port in ports.items():
                client = Client(port)
                for kind, rcpt in (("no alias", "someone@elsewhere.example"), ("alias", ALIAS)):
                    times = []
                    for i in range(args.messages):
                        sample = samples[i % len(samples)]
                        t0 = time.perf_counter()
                        if args.connection_per_message:
                            client.sock.close()
                            client = Client(port)
                        client.message(sample.envelope_from or "a@b.example", rcpt,
                                       sample.raw, f"Q{i:06d}")
                        times.append(time.perf_counter() - t0)
                    results.setdefault((name, kind), []).append(statistics.median(times))
                client.sock.close()
        load = os.getloadavg()
        how = "a connection each" if args.connection_per_message else "one connection"
        print(f"{args.messages} messages x {args.rounds} rounds, {how}, "
              f"load {load[0]:.1f}; median ms per message (best round)")
        for kind in ("no alias", "alias"):
            line = "  ".join(f"{name} {min(results[(name, kind)]) * 1e3:7.2f}" for name in trees)
            print(f"  {kind:9s} {line}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        dns.stop()


if __name__ == "__main__":
    main()

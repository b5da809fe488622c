"""Byte-level tests of the lookup server's protocols (socketmap netstrings, tcp_table
lines) against the real asyncio server on loopback sockets, plus the sans-IO codecs.
No database: a small in-memory map stands in for the alias replica."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import uvloop

from aliasd.core.decision import Decision
from aliasd.listen import ListenSpec
from aliasd.lookup import socketmap, tcp_table
from aliasd.lookup.netstring import (
    MalformedNetstring,
    NetstringDecoder,
    NetstringTooLong,
    encode,
)
from aliasd.lookup.server import LookupServer
from tests.harness.postfix import postmap_query

DATA = {
    "a@d.example": "dest@real.example",
    "b@d.example": "one@real.example,two@real.example",
    "sp ace@d.example": "value with space%and percent",
    "uni@d.example": "grüße@real.example",
}


class DictMap:
    """A map answering from a dict; keys starting with 'slow' need the async path."""

    def __init__(self, name: str, data: dict[str, str]) -> None:
        self.name = name
        self.data = data
        self.calls = 0
        self.hold = asyncio.Event()  # "hold" waits for it

    def _decide(self, key: str) -> Decision:
        self.calls += 1
        if key == "temp":
            return Decision.temp("database down")
        if key == "perm":
            return Decision.perm("misconfigured")
        if key == "boom":
            raise RuntimeError("bug in a map")
        if key == "big":
            return Decision.found("x" * 200_000)
        if key == "big4k":
            return Decision.found("y" * 4093)  # "200 " + 4093 + "\n" = 4098 > 4096
        if key == "fits4k":
            return Decision.found("z" * 4091)  # exactly 4096 bytes with "200 " and "\n"
        value = self.data.get(key)
        return Decision.found(value) if value else Decision.notfound()

    def lookup_fast(self, key: str) -> Decision | None:
        if key.startswith("slow") or key == "hold":
            return None
        return self._decide(key)

    async def lookup(self, key: str) -> Decision:
        if key == "hold":
            await self.hold.wait()
            return Decision.found("released")
        if key.startswith("slow"):
            await asyncio.sleep(0.2 if key == "slowest" else 0.02)
            return Decision.found(f"late-{key}")
        return self._decide(key)


class ServerThread:
    """A LookupServer on its own event loop in a thread, so tests use blocking sockets."""

    def __init__(
        self, tmp_dir: str, loop_name: str, idle_timeout: float = 0.8, max_connections: int = 0
    ) -> None:
        self.maps = {"virtual": DictMap("virtual", DATA), "other": DictMap("other", {"k": "v"})}
        self.server = LookupServer(
            self.maps, idle_timeout=idle_timeout, max_connections=max_connections
        )
        # lookupd runs on uvloop when it is installed, else on asyncio's own loop.
        self.loop = uvloop.new_event_loop() if loop_name == "uvloop" else asyncio.new_event_loop()
        self.unix_path = f"{tmp_dir}/socketmap.sock"
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.socketmap = self._call(self.server.listen_socketmap("127.0.0.1:0"))
        self.tcp = self._call(self.server.listen_tcp("127.0.0.1:0", "virtual"))
        self._call(self.server.listen_socketmap(f"unix:{self.unix_path}"))

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        self._call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def srv(request, tmp_path_factory) -> Iterator[ServerThread]:
    server = ServerThread(str(tmp_path_factory.mktemp("lookup")), request.param)
    yield server
    server.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_netstrings(sock: socket.socket, count: int) -> list[bytes]:
    decoder = NetstringDecoder(200_000)
    frames: list[bytes] = []
    while len(frames) < count:
        frame = decoder.next_frame()
        if frame is not None:
            frames.append(frame)
            continue
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"closed after {len(frames)} of {count} replies: {frames}")
        decoder.feed(data)
    return frames


def read_lines(sock: socket.socket, count: int) -> list[bytes]:
    buf = b""
    while buf.count(b"\n") < count:
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"closed early; got {buf!r}")
        buf += data
    return buf.split(b"\n")[:count]


def closed_by_peer(sock: socket.socket, timeout: float = 3.0) -> bool:
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


# A socketmap dialog and what Postfix must get back, byte for byte.
SM_DIALOG = [
    (b"virtual A@D.example", b"NOTFOUND "),  # the map itself decides; DictMap is case-exact
    (b"virtual a@d.example", b"OK dest@real.example"),
    (b"virtual b@d.example", b"OK one@real.example,two@real.example"),
    (b"virtual missing@d.example", b"NOTFOUND "),
    (b"virtual temp", b"TEMP database down"),
    (b"virtual perm", b"PERM misconfigured"),
    (b"virtual slow1", b"OK late-slow1"),
    (b"other k", b"OK v"),
    (b"nosuchmap k", b"PERM no map named 'nosuchmap'"),
    (b"virtual boom", b"TEMP lookup failed"),
    (b"virtual big", b"TEMP value too long for a socketmap reply"),
    (b"virtual sp ace@d.example", b"OK value with space%and percent"),
    (b"novalue", b"PERM request is not '<map> <key>'"),
    (b"virtual a@d.example", b"OK dest@real.example"),
]

TCP_DIALOG = [
    (b"get a@d.example", b"200 dest@real.example"),
    (b"get a%40d.example", b"200 dest@real.example"),
    (b"get missing@d.example", b"500 not found"),
    (b"get temp", b"400 database%20down"),
    (b"get sp%20ace@d.example", b"200 value%20with%20space%25and%20percent"),
    (b"get uni@d.example", b"200 gr%C3%BC%C3%9Fe@real.example"),
    (b"get slow2", b"200 late-slow2"),
    (b"put a b", b"400 only%20'get%20<key>'%20is%20supported"),
    (b"get a%zz", b"400 broken%20%25XX%20escape%20in%20request"),
    (b"get big4k", b"400 value too long for a tcp_table reply"),
    (b"get fits4k", b"200 " + b"z" * 4091),
    (b"get boom", b"400 lookup%20failed"),
    (b"GET a@d.example\r", b"200 dest@real.example"),
]


# --- sans-IO codecs -------------------------------------------------------------------
def test_netstring_every_split_point():
    frame = b"19:virtual a@d.example,"
    for i in range(len(frame)):
        dec = NetstringDecoder(100)
        dec.feed(frame[:i])
        assert dec.next_frame() is None
        dec.feed(frame[i:])
        assert dec.next_frame() == b"virtual a@d.example"
        assert dec.next_frame() is None
        assert dec.pending == 0


def test_netstring_pipelined_and_empty_payload():
    dec = NetstringDecoder(100)
    dec.feed(b"0:,3:abc,1:x")
    assert dec.next_frame() == b""
    assert dec.next_frame() == b"abc"
    assert dec.next_frame() is None
    dec.feed(b",")
    assert dec.next_frame() == b"x"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"abc:", MalformedNetstring),
        (b"x", MalformedNetstring),
        (b":abc,", MalformedNetstring),
        (b"-1:", MalformedNetstring),
        (b" 3:abc,", MalformedNetstring),
        (b"3:abcd", MalformedNetstring),
        (b"101:", NetstringTooLong),
        (b"9999", NetstringTooLong),
    ],
)
def test_netstring_errors_are_typed_and_sticky(data, error):
    dec = NetstringDecoder(100)
    dec.feed(data)
    with pytest.raises(error):
        dec.next_frame()
    dec.feed(b"3:abc,")
    with pytest.raises(error):  # the stream cannot be trusted any more
        dec.next_frame()


def test_netstring_encode():
    assert encode(b"OK x") == b"4:OK x,"
    assert encode(b"") == b"0:,"


def test_tcp_quoting_matches_postfix_hex_quote():
    assert tcp_table.quote(b"a b%c\t\x7f\xc3\xa9") == b"a%20b%25c%09%7F%C3%A9"
    assert tcp_table.unquote(b"a%20b%25c%09%7f") == b"a b%c\t\x7f"
    assert tcp_table.unquote(b"%2525") == b"%25"
    for bad in (b"%", b"%4", b"%zz", b"a%%41"):
        with pytest.raises(tcp_table.TcpRequestError):
            tcp_table.unquote(bad)


def test_reply_formats():
    assert socketmap.format_reply(Decision.notfound()) == b"9:NOTFOUND ,"
    assert socketmap.format_reply(Decision.found("x@y")) == b"6:OK x@y,"
    assert socketmap.format_reply(Decision.temp("db\r\ndown")) == b"12:TEMP db down,"
    assert tcp_table.format_reply(Decision.temp("db down")) == b"400 db%20down\n"
    assert tcp_table.format_reply(Decision.perm("bad")) == b"400 bad\n"
    with pytest.raises(ValueError):
        Decision.found("")  # never a bare OK


def test_listen_spec_parsing():
    assert ListenSpec.parse("127.0.0.1:10031") == ListenSpec(host="127.0.0.1", port=10031)
    assert ListenSpec.parse("inet:127.0.0.1:1") == ListenSpec(host="127.0.0.1", port=1)
    assert ListenSpec.parse("[::1]:25") == ListenSpec(host="::1", port=25)
    assert ListenSpec.parse("unix:/run/a.sock") == ListenSpec(path="/run/a.sock")
    assert ListenSpec.parse("[::1]:25").postfix() == "inet:[::1]:25"
    assert ListenSpec.parse("local:/run/a.sock") == ListenSpec(path="/run/a.sock")
    for bad in ("nonsense", "host:port", "unix:", "unix:relative", ":25", "1.2.3.4:99999"):
        with pytest.raises(ValueError):
            ListenSpec.parse(bad)


# --- socketmap over real sockets -------------------------------------------------------
@pytest.mark.parametrize("chunk", [4096, 128, 16, 1])
def test_socketmap_dialog_in_chunks(srv, chunk):
    stream = b"".join(encode(req) for req, _ in SM_DIALOG)
    with connect(srv.socketmap.port) as sock:
        for i in range(0, len(stream), chunk):
            sock.sendall(stream[i : i + chunk])
            if chunk <= 16 and i % 64 == 0:
                time.sleep(0.0005)  # let the server see the split
        assert read_netstrings(sock, len(SM_DIALOG)) == [rep for _, rep in SM_DIALOG]


def test_socketmap_every_split_point_over_socket(srv):
    frame = encode(b"virtual a@d.example")
    with connect(srv.socketmap.port) as sock:
        for i in range(1, len(frame)):
            sock.sendall(frame[:i])
            time.sleep(0.002)
            sock.sendall(frame[i:])
            assert read_netstrings(sock, 1) == [b"OK dest@real.example"]


def test_socketmap_pipelined_replies_in_order_with_slow_lookups(srv):
    requests, expected = [], []
    for i in range(600):
        if i % 100 == 7:
            requests.append(encode(b"virtual slow%d" % i))
            expected.append(b"OK late-slow%d" % i)
        elif i % 2:
            requests.append(encode(b"virtual a@d.example"))
            expected.append(b"OK dest@real.example")
        else:
            requests.append(encode(b"virtual nope%d@d.example" % i))
            expected.append(b"NOTFOUND ")
    with connect(srv.socketmap.port) as sock:
        sock.sendall(b"".join(requests))
        assert read_netstrings(sock, len(expected)) == expected


@pytest.mark.parametrize(
    ("garbage", "reply"),
    [
        (b"abc:virtual x,", b"PERM malformed request: bad netstring length b'abc'"),
        (b"5:virtual a,", b"PERM malformed request: netstring payload not followed by ','"),
        (b"100001:", b"PERM request too long"),
        (b"99999999999", b"PERM request too long"),
    ],
)
def test_socketmap_garbage_gets_error_and_close_others_unaffected(srv, garbage, reply):
    with connect(srv.socketmap.port) as good, connect(srv.socketmap.port) as bad:
        good.sendall(encode(b"virtual a@d.example"))
        assert read_netstrings(good, 1) == [b"OK dest@real.example"]
        # A valid request first: its reply still comes before the error.
        bad.sendall(encode(b"virtual slow9") + garbage + encode(b"virtual a@d.example"))
        assert read_netstrings(bad, 2) == [b"OK late-slow9", reply]
        assert closed_by_peer(bad)
        good.sendall(encode(b"virtual b@d.example"))
        assert read_netstrings(good, 1) == [b"OK one@real.example,two@real.example"]


def test_early_close_and_reset_are_harmless(srv):
    for payload in (b"19:virtual a@d", encode(b"virtual slowest"), b"12"):
        sock = connect(srv.socketmap.port)
        sock.sendall(payload)
        # SO_LINGER 0: the close is an abrupt RST, not a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    time.sleep(0.3)  # the slow lookup finishes after its client vanished
    with connect(srv.socketmap.port) as sock:
        sock.sendall(encode(b"virtual a@d.example"))
        assert read_netstrings(sock, 1) == [b"OK dest@real.example"]
    assert not any(c.transport is None for c in srv.server.connections)


def test_half_close_still_answers_queued_requests(srv):
    with connect(srv.socketmap.port) as sock:
        sock.sendall(encode(b"virtual slow3") + encode(b"virtual a@d.example"))
        sock.shutdown(socket.SHUT_WR)
        assert read_netstrings(sock, 2) == [b"OK late-slow3", b"OK dest@real.example"]
        assert closed_by_peer(sock)


def test_concurrent_clients_and_a_slow_one_does_not_block_others(srv):
    errors: list[str] = []

    def client(n: int) -> None:
        try:
            with connect(srv.socketmap.port) as sock:
                for i in range(100):
                    key = b"virtual a@d.example" if (i + n) % 2 else b"virtual x%d@d" % i
                    sock.sendall(encode(key))
                    want = b"OK dest@real.example" if (i + n) % 2 else b"NOTFOUND "
                    got = read_netstrings(sock, 1)[0]
                    if got != want:
                        errors.append(f"client {n}: {got!r} != {want!r}")
        except Exception as exc:  # surfaced below
            errors.append(f"client {n}: {exc!r}")

    with connect(srv.socketmap.port) as slow:
        slow.sendall(encode(b"virtual slowest"))
        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors, errors[:5]
        assert read_netstrings(slow, 1) == [b"OK late-slowest"]
        assert time.monotonic() - started >= 0.15


def test_client_that_never_reads_is_throttled_not_fatal(srv):
    flood = encode(b"virtual a@d.example") * 30_000
    with connect(srv.socketmap.port) as hog:
        hog.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 5
        while sent < len(flood) and time.monotonic() < deadline:
            try:
                sent += hog.send(flood[sent : sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        with connect(srv.socketmap.port) as other:  # still served meanwhile
            other.sendall(encode(b"virtual a@d.example"))
            assert read_netstrings(other, 1) == [b"OK dest@real.example"]
        hog.setblocking(True)
        hog.settimeout(10)
        rest = flood[sent:]
        reader = threading.Thread(target=hog.sendall, args=(rest,))
        reader.start()
        replies = read_netstrings(hog, 30_000)
        reader.join(10)
        assert set(replies) == {b"OK dest@real.example"}


def test_pipelined_requests_behind_a_stuck_lookup_are_bounded(srv):
    vmap = srv.maps["virtual"]
    vmap.hold = asyncio.Event()
    count = 50_000
    with connect(srv.socketmap.port) as sock:
        sender = threading.Thread(
            target=sock.sendall,
            args=(encode(b"virtual hold") + encode(b"virtual a@d.example") * count,),
        )
        sender.start()
        time.sleep(0.5)  # the server reads until its queue is full, then stops reading
        queued = [len(c.queue) for c in list(srv.server.connections)]
        assert max(queued) < 10_000, queued  # not all 50,000 requests are held in memory
        srv.loop.call_soon_threadsafe(vmap.hold.set)
        replies = read_netstrings(sock, count + 1)
        sender.join(10)
    assert replies[0] == b"OK released"
    assert replies[1:] == [b"OK dest@real.example"] * count


def test_idle_connection_is_closed(srv):
    with connect(srv.socketmap.port) as sock:
        sock.sendall(encode(b"virtual a@d.example"))
        assert read_netstrings(sock, 1) == [b"OK dest@real.example"]
        started = time.monotonic()
        sock.sendall(b"5:vir")  # a slow client that never completes its request
        assert closed_by_peer(sock, timeout=3)
        assert 0.5 < time.monotonic() - started < 2.5


@pytest.fixture(params=["asyncio", "uvloop"])
def capped(request, tmp_path) -> Iterator[ServerThread]:
    """A server that takes at most four connections, with a long idle timeout."""
    server = ServerThread(str(tmp_path), request.param, idle_timeout=60, max_connections=4)
    yield server
    server.stop()


def test_past_the_connection_cap_the_longest_idle_connection_makes_room(capped):
    socks = [connect(capped.socketmap.port) for _ in range(4)]
    try:
        for sock in socks[1:]:  # the first stays idle longest
            sock.sendall(encode(b"virtual a@d.example"))
            assert read_netstrings(sock, 1) == [b"OK dest@real.example"]
        with connect(capped.socketmap.port) as newcomer:
            newcomer.sendall(encode(b"virtual a@d.example"))
            assert read_netstrings(newcomer, 1) == [b"OK dest@real.example"]
            assert closed_by_peer(socks[0], timeout=3)
            for sock in socks[1:]:  # the others keep their connection
                sock.sendall(encode(b"other k"))
                assert read_netstrings(sock, 1) == [b"OK v"]
        assert capped.server.evicted == 1
    finally:
        for sock in socks:
            sock.close()


def test_past_the_connection_cap_with_every_connection_busy_a_new_one_is_closed(capped):
    busy = [connect(capped.socketmap.port) for _ in range(4)]
    try:
        for sock in busy:
            sock.sendall(encode(b"virtual hold"))
        time.sleep(0.2)
        with connect(capped.socketmap.port) as newcomer:
            assert closed_by_peer(newcomer, timeout=3)
        assert capped.server.refused == 1
        capped.loop.call_soon_threadsafe(capped.maps["virtual"].hold.set)
        for sock in busy:  # nothing that was being answered is lost
            assert read_netstrings(sock, 1) == [b"OK released"]
    finally:
        for sock in busy:
            sock.close()


def test_connection_cap_follows_the_descriptor_limit():
    import resource

    from aliasd.lookup.descriptors import RESERVED_DESCRIPTORS, default_max_connections

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert default_max_connections() == soft - RESERVED_DESCRIPTORS


EXHAUST_DESCRIPTORS = """
import asyncio, logging, resource, socket, sys
import uvloop
from aliasd.lookup.server import LookupServer
logging.basicConfig(level=logging.INFO, format="%(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
async def main():
    server = LookupServer({}, max_connections=48)
    server.max_connections = 10_000  # as if the limit had been lowered after start
    server.install_loop_handler(asyncio.get_running_loop())
    await server.listen_socketmap(f"unix:{sys.argv[2]}")
    clients = []
    for _ in range(80):  # the clients' descriptors count against the same limit
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.setblocking(False)
            clients.append(sock)
            await asyncio.get_running_loop().sock_connect(sock, sys.argv[2])
        except OSError:
            break
    await asyncio.sleep(3)
    await server.close()
(uvloop.run if sys.argv[1] == "uvloop" else asyncio.run)(main())
"""


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_running_out_of_descriptors_is_logged(loop_name, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", EXHAUST_DESCRIPTORS, loop_name, str(tmp_path / "s.sock")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "out of file descriptors" in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("out of file descriptors") == 1, proc.stderr[-2000:]


def test_unix_socket_listener(srv):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(srv.unix_path)
        sock.sendall(encode(b"virtual a@d.example") + encode(b"other k"))
        assert read_netstrings(sock, 2) == [b"OK dest@real.example", b"OK v"]


# --- tcp_table over real sockets -------------------------------------------------------
@pytest.mark.parametrize("chunk", [4096, 128, 16, 1])
def test_tcp_dialog_in_chunks(srv, chunk):
    stream = b"".join(req + b"\n" for req, _ in TCP_DIALOG)
    with connect(srv.tcp.port) as sock:
        for i in range(0, len(stream), chunk):
            sock.sendall(stream[i : i + chunk])
            if chunk <= 16 and i % 64 == 0:
                time.sleep(0.0005)
        replies = read_lines(sock, len(TCP_DIALOG))
    assert replies == [rep for _, rep in TCP_DIALOG]
    assert all(len(r) + 1 <= 4096 for r in replies)


def test_tcp_every_split_point_over_socket(srv):
    line = b"get a%40d.example\n"
    with connect(srv.tcp.port) as sock:
        for i in range(1, len(line)):
            sock.sendall(line[:i])
            time.sleep(0.002)
            sock.sendall(line[i:])
            assert read_lines(sock, 1) == [b"200 dest@real.example"]


def test_tcp_oversize_request_gets_error_and_close(srv):
    with connect(srv.tcp.port) as sock:
        sock.sendall(b"get " + b"a" * 5000)
        assert read_lines(sock, 1) == [b"400 request%20too%20long"]
        assert closed_by_peer(sock)
    with connect(srv.tcp.port) as sock:
        sock.sendall(b"get a@d.example\n" + b"get " + b"b" * 4100 + b"\nget a@d.example\n")
        assert read_lines(sock, 2) == [b"200 dest@real.example", b"400 request%20too%20long"]
        assert closed_by_peer(sock)


def test_tcp_pipelined_in_order(srv):
    lines, expected = [], []
    for i in range(500):
        if i % 50 == 3:
            lines.append(b"get slow%d\n" % i)
            expected.append(b"200 late-slow%d" % i)
        else:
            lines.append(b"get b%40d.example\n")
            expected.append(b"200 one@real.example,two@real.example")
    with connect(srv.tcp.port) as sock:
        sock.sendall(b"".join(lines))
        assert read_lines(sock, len(expected)) == expected


# --- the real Postfix client -------------------------------------------------------------
def test_postmap_decodes_our_replies(srv):
    sm = f"socketmap:inet:127.0.0.1:{srv.socketmap.port}:virtual"
    tcp = f"tcp:127.0.0.1:{srv.tcp.port}"
    for spec in (sm, tcp, f"socketmap:unix:{srv.unix_path}:virtual"):
        assert postmap_query("a@d.example", spec)[:2] == (0, "dest@real.example")
        assert postmap_query("missing@d.example", spec)[:2] == (1, "")
    # Spaces and '%' survive tcp_table's %XX encoding in both directions.
    assert postmap_query("sp ace@d.example", tcp)[:2] == (0, "value with space%and percent")
    assert postmap_query("sp ace@d.example", sm)[:2] == (0, "value with space%and percent")
    # A temporary failure is a query error for Postfix (smtpd: 451), never "not found".
    status, _out, err = postmap_query("temp", tcp)
    assert status == 1 and "query error" in err
    status, _out, err = postmap_query("temp", sm)
    assert status == 1 and "temporary error: database down" in err and "query error" in err

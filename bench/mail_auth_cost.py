"""Per-message cost of the milter's mail authentication: verifying the incoming message
(SPF, DKIM, the ARC chain, DMARC) plus ARC-sealing it, in-process, with every DNS lookup
answered by the tests' own DNS server on 127.0.0.1 (real queries, no network).

    python bench/mail_auth_cost.py [--messages 300] [--ttl 300]

Messages: a DKIM-signed (RSA 2048) message from a p=reject domain whose SPF lists the
sender; once without an ARC chain, once arriving with one (a second hop). Prints ms per
message for verify, seal, and both.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aliasd.config import load_settings  # noqa: E402
from aliasd.mailauth import keys, seal  # noqa: E402
from aliasd.mailauth.verify import authenticate  # noqa: E402
from tests.harness.dns import DnsServer  # noqa: E402

MESSAGE = (
    b"From: Bank <alerts@bank.example>\r\nTo: github.com@example.net\r\n"
    b"Subject: Your statement\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <stmt@bank.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
    + b"Your December statement is ready.\r\n" * 60
)


def run(settings, message: bytes, count: int) -> tuple[float, float]:
    verify_s = seal_s = 0.0
    for _ in range(count):
        t0 = time.perf_counter()
        results = authenticate(settings, message=message, sender="alerts@bank.example",
                               client_addr="192.0.2.10", helo="mail.bank.example",
                               from_header=b"Bank <alerts@bank.example>")  # fmt: skip
        t1 = time.perf_counter()
        arc_set = seal.seal(settings, "example.net", message,
                            results.header_value(settings.effective_authserv_id))  # fmt: skip
        t2 = time.perf_counter()
        assert len(arc_set) == 3 and results.dkim_summary == "pass"
        verify_s += t1 - t0
        seal_s += t2 - t1
    return verify_s * 1000 / count, seal_s * 1000 / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--ttl", type=int, default=300, help="TTL of the DNS answers (0: no cache)")
    args = ap.parse_args()
    dns = DnsServer(ttl=args.ttl).start()
    try:
        base = Path(tempfile.mkdtemp(prefix="aliasd-bench-auth-"))
        settings = load_settings(environ={}, data_dir=str(base / "ours"),
                                 dns_resolver=dns.address, authserv_id="mx.example.net")
        bank = load_settings(environ={}, data_dir=str(base / "bank"), dkim_selector="bank")
        for key in keys.signing_keys(bank, "bank.example") + keys.signing_keys(
                settings, "example.net"):  # fmt: skip
            dns.add(key.dns_name, "TXT", key.dns_txt())
        dns.add("bank.example", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
        dns.add("_dmarc.bank.example", "TXT", "v=DMARC1; p=reject")
        signed = keys.dkim_sign(bank, "bank.example", MESSAGE, ["from", "to", "subject", "date"])
        signed = signed + MESSAGE
        results = authenticate(settings, message=signed, sender="alerts@bank.example",
                               client_addr="192.0.2.10", helo="mail.bank.example",
                               from_header=b"Bank <alerts@bank.example>")  # fmt: skip
        value = results.header_value("mx.example.net")
        first = seal.seal(settings, "example.net", signed, value)
        chained = "".join(f"{n}: {v}\r\n".replace("\n\t", "\r\n\t") for n, v in first).encode()
        chained += b"Authentication-Results: " + value.encode() + b"\r\n" + signed
        print(f"{args.messages} messages each, DNS on 127.0.0.1, TTL {args.ttl} s "
              "(aliasd's resolver caches answers for their TTL)")
        print("message               verify ms   seal ms   total ms")
        for name, message in (("signed, no ARC chain", signed), ("signed, ARC i=1 chain", chained)):
            run(settings, message, 5)  # warm-up
            v, s = run(settings, message, args.messages)
            print(f"{name:<21} {v:9.2f} {s:9.2f} {v + s:10.2f}")
    finally:
        dns.stop()


if __name__ == "__main__":
    main()

"""Per-message cost of the milter's mail authentication: verifying the incoming message
(SPF, DKIM, the ARC chain, DMARC), DKIM-signing it with the alias domain's key as
forwarded mail with one-click headers is, plus ARC-sealing it, the way the milter does
(from the header block and the body verification parsed; the seal covers our
signature), in-process, with every DNS lookup answered by the tests' own DNS server on
127.0.0.1 (real queries, no network).

    python bench/mail_auth_cost.py [--messages 300] [--ttl 300] [--ed25519]

Messages: a DKIM-signed (RSA 2048) message from a p=reject domain whose SPF lists the
sender; once without an ARC chain, once arriving with one (a second hop); then 2 MB
bodies (text, and hostile whitespace that dkimpy's regular expressions are slowest on).
Each runs twice in the same process, side by side: with dkimpy's (and authres') own
helpers as shipped (but RSA signing through OpenSSL, which aliasd did before), and with
aliasd's replacements (aliasd/mailauth/fastdkim.py and fastrsa.py). The DNS answer
cache and the signing-key cache are aliasd's in both.
Prints ms per message for verify, sign, seal, and all three; then, aliasd's helpers only,
verify + seal without the signature (``forward_dkim_sign = false``) and what signing
adds (``--ed25519``: with a second, ed25519 key). Kept canonical bodies are dropped
before each message, so a repetition costs what a new message costs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aliasd.config import load_settings  # noqa: E402
from aliasd.mailauth import fastdkim, keys, seal, signing  # noqa: E402
from aliasd.mailauth.verify import authenticate  # noqa: E402
from tests.harness.dns import DnsServer  # noqa: E402

HEAD = (
    b"From: Bank <alerts@bank.example>\r\nTo: github.com@example.net\r\n"
    b"Subject: Your statement\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <stmt@bank.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
)
MESSAGE = HEAD + b"Your December statement is ready.\r\n" * 60
BIG = 2_000_000
BIG_TEXT = HEAD + b"Your December statement is ready, see the attached summary.\r\n" * (BIG // 61)
BIG_HOSTILE = HEAD + b"a \t" * (BIG // 3) + b"\r\n"


ONE_CLICK = (b"List-Unsubscribe: <https://aliases.example.net/oneclick/eyJhIjoiZGlzYWJsZSJ9.x.y>\r\n"
             b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")


def _one(settings, message: bytes, head: bytes, sign: bool) -> tuple[float, float, float]:
    """Seconds for verify, sign (0 when ``sign`` is false), seal of one message."""
    fastdkim.forget_bodies()  # each repetition is a new message: nothing computed yet
    t0 = time.perf_counter()
    results = authenticate(settings, message=message, sender="alerts@bank.example",
                           client_addr="192.0.2.10", helo="mail.bank.example",
                           from_header=b"Bank <alerts@bank.example>")  # fmt: skip
    t1 = time.perf_counter()
    fields = signing.forward_signature(settings, "example.net", head, results.body) \
        if sign else []
    signed = b"".join(f"{n}: {v}\n".replace("\n", "\r\n").encode() for n, v in fields)
    t2 = time.perf_counter()
    arc_set = seal.seal_parts(settings, "example.net", signed + head, results.body,
                              results.header_value(settings.effective_authserv_id))  # fmt: skip
    t3 = time.perf_counter()
    assert len(arc_set) == 3 and results.dkim_summary == "pass", results
    assert len(fields) == (1 + settings.dkim_ed25519 if sign else 0), fields
    return t1 - t0, t2 - t1, t3 - t2


def run(settings, message: bytes, count: int, sign: tuple[bool, ...] = (True,)) -> list:
    """ms per message for verify, sign, seal, per entry of ``sign``; the variants take
    turns message by message, so they see the same moments of a noisy machine."""
    head = message[: message.index(b"\r\n\r\n") + 2] + ONE_CLICK
    sums = [[0.0, 0.0, 0.0] for _ in sign]
    for i in range(count):
        order = list(enumerate(sign))
        for k, with_sign in order if i % 2 == 0 else order[::-1]:
            for j, t in enumerate(_one(settings, message, head, with_sign)):
                sums[k][j] += t
    return [[t * 1000 / count for t in row] for row in sums]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--ttl", type=int, default=300, help="TTL of the DNS answers (0: no cache)")
    ap.add_argument("--ed25519", action="store_true", help="sign with an ed25519 key too")
    args = ap.parse_args()
    dns = DnsServer(ttl=args.ttl).start()
    try:
        base = Path(tempfile.mkdtemp(prefix="aliasd-bench-auth-"))
        settings = load_settings(environ={}, data_dir=str(base / "ours"),
                                 dns_resolver=dns.address, authserv_id="mx.example.net",
                                 dkim_ed25519=args.ed25519)  # fmt: skip
        bank = load_settings(environ={}, data_dir=str(base / "bank"), dkim_selector="bank")
        for key in keys.signing_keys(bank, "bank.example") + keys.signing_keys(
                settings, "example.net"):  # fmt: skip
            dns.add(key.dns_name, "TXT", key.dns_txt())
        dns.add("bank.example", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
        dns.add("_dmarc.bank.example", "TXT", "v=DMARC1; p=reject")

        def signed(message: bytes) -> bytes:
            header = keys.dkim_sign(bank, "bank.example", message, ["from", "to", "subject", "date"])
            return header + message

        first = signed(MESSAGE)
        results = authenticate(settings, message=first, sender="alerts@bank.example",
                               client_addr="192.0.2.10", helo="mail.bank.example",
                               from_header=b"Bank <alerts@bank.example>")  # fmt: skip
        value = results.header_value("mx.example.net")
        arc_set = seal.seal(settings, "example.net", first, value)
        chained = "".join(f"{n}: {v}\r\n".replace("\n\t", "\r\n\t") for n, v in arc_set).encode()
        chained += b"Authentication-Results: " + value.encode() + b"\r\n" + first
        cases = [("signed, no ARC chain", first, args.messages),
                 ("signed, ARC i=1 chain", chained, args.messages),
                 ("2 MB text body", signed(BIG_TEXT), max(3, args.messages // 30)),
                 ("2 MB hostile body", signed(BIG_HOSTILE), max(3, args.messages // 30))]
        print(f"{args.messages} messages each (2 MB: {cases[2][2]}), DNS on 127.0.0.1, TTL "
              f"{args.ttl} s, signing keys: {'RSA + ed25519' if args.ed25519 else 'RSA'}; "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"{'message':<22} {'helpers':<8} {'verify ms':>9} {'sign ms':>9} {'seal ms':>9}"
              f" {'total ms':>9} {'ratio':>6} {'unsigned':>9} {'added':>6}")
        for name, message, count in cases:
            with fastdkim.dkimpy_as_shipped(keep_openssl_signing=True):
                run(settings, message, 2)  # warm-up
                [(sv, sg, ss)] = run(settings, message, count)
            run(settings, message, 2, (True, False))
            (v, g, s), (uv, _, us) = run(settings, message, count, (True, False))
            print(f"{name:<22} {'dkimpy':<8} {sv:9.2f} {sg:9.2f} {ss:9.2f} {sv + sg + ss:9.2f}")
            print(f"{'':<22} {'aliasd':<8} {v:9.2f} {g:9.2f} {s:9.2f} {v + g + s:9.2f}"
                  f" {(sv + sg + ss) / (v + g + s):5.1f}x {uv + us:9.2f}"
                  f" {v + g + s - uv - us:+6.2f}")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        dns.stop()


if __name__ == "__main__":
    main()

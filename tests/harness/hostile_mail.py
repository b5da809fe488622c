"""Generated hostile messages: inputs that make naive regexes, HTML strippers and MIME
parsers super-linear. Each is at most about 2 MB (the milter's default
``max_scan_size``), the largest body the scanner is ever given.

Shared by the scanner tests (time per message bounded) and ``bench/scan_worst.py``
(worst-case milliseconds per message)."""

from __future__ import annotations

import base64
import random

SIZE = 1_900_000  # bytes of body: just under the milter's 2 MB scan cap


def _message(body: bytes, *, ctype: str = "text/plain; charset=utf-8", headers: bytes = b"",
             cte: str = "8bit", subject: str = "hello") -> bytes:
    # the extra headers come first: where a name repeats, they are the ones read
    return (
        headers
        + b"From: Someone <someone@example.org>\r\n"
        b"To: shop.example@aliases.test\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n"
        b"Message-ID: <hostile@example.org>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: " + ctype.encode() + b"\r\n"
        b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n"
        b"\r\n" + body
    )


def _html(body: bytes) -> bytes:
    return _message(body, ctype="text/html; charset=utf-8")


def unclosed_style_lines(n: int = 66_000) -> bytes:
    """The message that froze the milter: 66,000 ``<style>`` lines, none closed (594 KB)."""
    return _html(b"<html><body>\r\n" + b"<style>\r\n" * n + b"</body></html>\r\n")


def us_dollar_spaces(n: int = 50_000) -> bytes:
    """'us' + 50,000 spaces + digits: a backtracking trap for ``us\\s*\\$?\\s*\\d``."""
    return _message(b"Dear friend, us" + b" " * n + b"12 and more\r\n")


def _runs(unit: bytes, prefix: bytes = b"") -> bytes:
    return prefix + unit * ((SIZE - len(prefix)) // len(unit))


def hostile_corpus() -> dict[str, bytes]:
    """name -> raw message. Deterministic (fixed random seed)."""
    rng = random.Random(18)
    corpus: dict[str, bytes] = {
        "unclosed <style> x 66,000": unclosed_style_lines(),
        "us + 50,000 spaces + digits": us_dollar_spaces(),
        "us + 1.9 MB of spaces": _message(_runs(b" ", b"us") + b"5 million\r\n"),
        "unclosed <script> x 200,000": _html(b"<script>" * 200_000),
        "<style> x 100,000, one closed at the end": _html(b"<style>x" * 100_000 + b"</style>"),
        "'<' without '>' x 1.9 MB": _html(_runs(b"<")),
        "'<a' + long attribute, no '>'": _html(_runs(b"a", b"<a href=\"")),
        "href= + 1.9 MB of spaces": _html(_runs(b" ", b"<a href=")),
        "whitespace run (plain)": _message(_runs(b" \t")),
        "whitespace run (html)": _html(_runs(b" ", b"<p>")),
        "digit run": _message(_runs(b"7", b"us $")),
        "dot run": _message(_runs(b".", b"u.s")),
        "'=' run (plain)": _message(_runs(b"=")),
        "'=' run (quoted-printable)": _message(_runs(b"="), cte="quoted-printable"),
        "quoted-printable soft-break flood": _message(_runs(b"=\r\n"), cte="quoted-printable"),
        "quoted-printable '=3D' flood": _message(_runs(b"=3D"), cte="quoted-printable",
                                                 ctype="text/html; charset=utf-8"),
        "base64 garbage": _message(
            bytes(rng.choice(b"ABCDEFGH!@#$%^&*()=\r\n-_") for _ in range(SIZE)), cte="base64"
        ),
        "base64 of random bytes": _message(
            base64.encodebytes(rng.randbytes(SIZE * 3 // 4)), cte="base64"
        ),
        "base64 of unclosed <style>": _message(
            base64.encodebytes(b"<style>\n" * 170_000), cte="base64", ctype="text/html"
        ),
        "deep nesting (tags)": _html(b"<div>" * 190_000 + b"spam" + b"</div>" * 190_000),
        "deep nesting (<b><i> unclosed)": _html(_runs(b"<b><i><u>")),
        "huge attribute": _html(b"<img alt=\"" + b"x" * SIZE + b"\">"),
        "huge attribute, many attributes": _html(b"<font " + b"a=b " * (SIZE // 4) + b">"),
        "html comment never closed": _html(_runs(b"-", b"<!--")),
        "'<!--' x 1.9 MB": _html(_runs(b"<!--")),
        "entities '&#' + digits": _html(_runs(b"9", b"&#")),
        "entities '&#1;' flood": _html(_runs(b"&#1;")),
        "entities '&amp' flood": _html(_runs(b"&amp")),
        "url flood": _message(_runs(b"http://a.example/x ")),
        "url with a 1.9 MB host": _message(_runs(b"a", b"http://")),
        "mailto ?subject= flood": _html(_runs(b"mailto:a?subject=" + b" " * 50)),
        "words flood": _message(_runs(b"lorem ipsum dolor sit amet ")),
        "one 1.9 MB word": _message(_runs(b"x")),
        "tiny MIME parts x 60,000": _multipart(60_000),
        "nested multiparts x 2,000": _nested(2_000),
        "nested multiparts x 200": _nested(200),
        "huge single header (folded)": _message(
            b"hello\r\n", headers=b"X-Junk: " + b"a b\r\n " * (SIZE // 6) + b"end\r\n"
        ),
        "huge Subject header": _message(b"hello\r\n", subject="SAVE " * (SIZE // 5)),
        "huge Reply-To header": _message(
            b"hello\r\n",
            headers=b"Reply-To: " + b"<a@b>, " * (SIZE // 7) + b"\r\n",
        ),
        "huge From header (comments, quotes)": _message(
            b"hello\r\n",
            headers=b"From: " + b"(a \"b\" <c@d>) " * (SIZE // 14) + b"\r\n",
        ),
        "huge Received header": _message(
            b"hello\r\n", headers=b"Received: from " + b"[1.2.3." * (SIZE // 7) + b"\r\n"
        ),
        "huge Message-ID": _message(
            b"hello\r\n", headers=b"Message-ID: <" + b"a1" * (SIZE // 2) + b"@example.org>\r\n"
        ),
        "huge Date and X-Mailer": _message(
            b"hello\r\n",
            headers=b"X-Mailer: " + b"Outlook 9 " * (SIZE // 20) + b"\r\nDate: "
            + b"Mon, 1 " * (SIZE // 14) + b"\r\n",
        ),
        "many headers": _message(b"hello\r\n", headers=b"X-A: b\r\n" * (SIZE // 8)),
        "RFC 2047 encoded-word flood": _message(
            b"hello\r\n", headers=b"X-Enc: " + b"=?utf-8?q?a?= " * (SIZE // 14) + b"\r\n"
        ),
        "binary junk": _message(rng.randbytes(SIZE)),
        "NUL bytes": _message(b"\x00" * SIZE),
        "long lines without CRLF": _message(_runs(b"abc ", b"")),
        "header only, no body separator": b"X-Header: " + b"y" * SIZE,
    }
    return corpus


def _multipart(parts: int) -> bytes:
    chunk = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
    body = chunk * parts + b"--b--\r\n"
    return _message(body, ctype='multipart/mixed; boundary="b"', cte="7bit")


def _nested(depth: int) -> bytes:
    opening = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n" % (i, i + 1)
        for i in range(depth)
    )
    inner = b"--b%d\r\nContent-Type: text/plain\r\n\r\nspam spam\r\n" % depth
    closing = b"".join(b"--b%d--\r\n" % i for i in range(depth, -1, -1))
    filler = b"line of text\r\n" * 20_000
    return _message(opening + inner + filler + closing,
                    ctype='multipart/mixed; boundary="b0"', cte="7bit")

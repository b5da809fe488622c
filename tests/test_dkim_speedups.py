"""aliasd's replacements for dkimpy's message-sized helpers give dkimpy's own results,
byte for byte, on hostile input (random mixes of whitespace and line ends, bare CR and
LF, folded and malformed headers), and a seal made from the parts verification parsed is
the seal dkimpy makes from the whole message."""

from __future__ import annotations

import random

import authres
import dkim
import dkim.canonicalization as canon
import pytest

from aliasd.config import load_settings
from aliasd.mailauth import fastdkim, keys, seal, signing
from aliasd.mailauth.dmarc import DmarcResult
from aliasd.mailauth.verify import AuthResults, DkimResult

TOKENS = [b"a", b"b", b" ", b"\t", b"\r", b"\n", b"\r\n", b"  ", b"\r\n\r\n", b"H: v",
          b"From x", b"\r\n ", b"X:", b"\n\n", b"\r\r\n"]  # fmt: skip


def _random_bytes(rng: random.Random, most: int = 40) -> bytes:
    return b"".join(rng.choice(TOKENS) for _ in range(rng.randint(0, most)))


def _outcome(func, *args):
    try:
        return func(*args)
    except Exception as exc:  # noqa: BLE001 - the same error is the same outcome
        return type(exc)


def test_parsing_and_body_canonicalisation_match_dkimpys_own():
    rng = random.Random(7)
    for _ in range(20_000):
        data = _random_bytes(rng)
        with fastdkim.dkimpy_as_shipped():
            parsed = _outcome(dkim.rfc822_parse, data)
            relaxed = canon.Relaxed.canonicalize_body(data)
            simple = canon.Simple.canonicalize_body(data)
        assert _outcome(fastdkim.parse_message, data) == parsed, data
        assert fastdkim.relaxed_body(data) == relaxed, data
        assert fastdkim.strip_trailing_lines(data) == simple, data


def test_relaxed_header_canonicalisation_matches_dkimpys_own():
    rng = random.Random(8)
    for _ in range(10_000):
        headers = [(rng.choice([b"From", b"X-A ", b"subject"]), _random_bytes(rng, 12))
                   for _ in range(3)]  # fmt: skip
        with fastdkim.dkimpy_as_shipped():
            expected = canon.Relaxed.canonicalize_headers(headers)
        assert fastdkim.relaxed_headers(headers) == expected, headers


@pytest.mark.parametrize("body", [
    b"a " * 1_000_000, b" \t\r\n" * 500_000, b"x\r\n" + b"\r\n" * 1_000_000,
    b"x" + b" " * 2_000_000 + b"\r\n", b"a\n" * 1_000_000, b"\r\r\n" * 600_000,
])  # fmt: skip
def test_hostile_two_megabyte_bodies_canonicalise_like_dkimpy(body):
    with fastdkim.dkimpy_as_shipped():
        relaxed = canon.Relaxed.canonicalize_body(dkim.rfc822_parse(b"A: b\r\n\r\n" + body)[1])
    assert fastdkim.relaxed_body(fastdkim.parse_message(b"A: b\r\n\r\n" + body)[1]) == relaxed


def test_our_authentication_results_read_back_as_written():
    """The seal takes the header object we built instead of parsing our text again, so
    parsing must give the same results for any reason or identity a sender can cause."""
    rng = random.Random(9)
    alphabet = 'ab@."\\();= \t-_x\'\u00e9[]<>,:'

    def junk():
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 20))) or None

    for _ in range(3000):
        results = AuthResults(
            spf=rng.choice(["pass", "fail", "none", "temperror"]), spf_mailfrom=junk(),
            dkim=[DkimResult(rng.choice(["pass", "fail", "permerror"]), "d.example", "s",
                             "rsa-sha256", junk() or "")],
            arc=rng.choice(["none", "pass", "fail"]), checked=rng.random() < 0.8,
            dmarc=DmarcResult(rng.choice(["pass", "fail", "none"]), junk(),
                              rng.choice([None, "reject"]), junk() or ""),
        )  # fmt: skip
        built = results.header("mx.example.net")
        with fastdkim.dkimpy_as_shipped():
            parsed = authres.AuthenticationResultsHeader.parse(
                "Authentication-Results: " + built.header_value())
        assert parsed.authserv_id == built.authserv_id
        assert [str(r) for r in parsed.results] == [str(r) for r in built.results]


def test_a_seal_from_the_parsed_parts_is_dkimpys_seal_of_the_whole_message(tmp_path):
    settings = load_settings(environ={}, data_dir=str(tmp_path), authserv_id="mx.example.net")
    (key,) = keys.signing_keys(settings, "alias.example")
    ar_value = AuthResults(spf="pass", spf_mailfrom="a@bank.example").header_value("mx.example.net")
    body = b"Statement \t ready.  \r\n\r\n" * 2000 + b"\r\n\r\n"
    for message in (
        b"From: Bank <a@bank.example>\r\nTo: x@alias.example\r\nSubject:  folded\r\n\tline\r\n"
        b"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\n\r\n" + body,
        b"From: a@bank.example\nSubject: bare LF\n\n" + body.replace(b"\r\n", b"\n"),
        b"From: a@bank.example\r\nSubject: no body\r\n",
    ):
        ours = seal.seal(settings, "alias.example", message, ar_value, timestamp=1_700_000_000)
        with fastdkim.dkimpy_as_shipped():
            names = [h for h in seal.AMS_HEADERS if h.encode() + b":" in message.lower()]
            theirs = dkim.arc_sign(
                b"Authentication-Results: " + ar_value.encode() + b"\r\n" + message,
                key.selector.encode(), key.domain.encode(), key.private_key_pem,
                b"mx.example.net", include_headers=[n.encode() for n in names],
                timestamp=1_700_000_000)  # fmt: skip
        assert ours == signing.header_fields(theirs)


@pytest.mark.parametrize("algorithm", [keys.RSA, keys.ED25519])
def test_a_forward_signature_from_the_parsed_parts_is_dkimpys_signature(tmp_path, monkeypatch,
                                                                        algorithm):
    import time

    settings = load_settings(environ={}, data_dir=str(tmp_path), dkim_ed25519=True)
    key = next(k for k in keys.signing_keys(settings, "alias.example") if k.algorithm == algorithm)
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000)
    head = (b"From: Bank <a@bank.example>\r\nTo: x@alias.example\r\nSubject:  folded\r\n\tline\r\n"
            b"List-Unsubscribe: <https://aliases.example/oneclick/t>\r\n"
            b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    for body in (b"Statement \t ready.  \r\n\r\n" * 2000, b"short\r\n", b""):
        fields = signing.forward_signature(settings, "alias.example", head, body)
        ours = [v for n, v in fields if f"a={algorithm};" in v.replace(" ", "")]
        with fastdkim.dkimpy_as_shipped():
            theirs = dkim.sign(head + b"\r\n" + body, key.selector.encode(), b"alias.example",
                               key.dkimpy_private_key(), canonicalize=(b"relaxed", b"relaxed"),
                               signature_algorithm=algorithm.encode(),
                               include_headers=[b"from", b"to", b"subject", b"list-unsubscribe",
                                                b"list-unsubscribe-post", b"list-unsubscribe",
                                                b"list-unsubscribe-post"])  # fmt: skip
        assert [v for _n, v in signing.header_fields([theirs])] == ours


def test_a_kept_bodys_digest_is_its_sha256_computed_once():
    import hashlib

    fastdkim.forget_bodies()
    body = b"Statement \t ready.  \r\n" * 5000
    canonical = fastdkim._memo.get(canon.Relaxed, body)
    assert fastdkim._memo.kept(canonical) and not fastdkim._memo.kept(canonical[:-1] + canonical[-1:])
    expected = hashlib.sha256(canonical).digest()
    assert fastdkim.KeptBodySha256(canonical).digest() == expected
    assert fastdkim._memo._digests[id(canonical)][1] == expected  # kept for the next one
    mixed = fastdkim.KeptBodySha256()
    mixed.update(canonical)
    copied = mixed.copy()
    mixed.update(b"tail")
    assert mixed.digest() == hashlib.sha256(canonical + b"tail").digest()
    assert copied.digest() == expected
    small = fastdkim.KeptBodySha256(b"abc")
    assert small.digest() == hashlib.sha256(b"abc").digest() and small.name == "sha256"
    fastdkim.forget_bodies()
    assert not fastdkim._memo.kept(canonical)  # forgotten: hashed as it comes
    assert fastdkim.KeptBodySha256(canonical).digest() == expected

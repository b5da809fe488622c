"""DKIM, SPF, DMARC and ARC of incoming mail through the tests' own DNS server: real
lookups, real dkimpy, no mocks. Hostile input (unknown algorithms, broken or duplicated
ARC chains, DNS that never answers) gives a result, never an exception."""

from __future__ import annotations

import re

import dkim
import pytest

from aliasd.config import load_settings
from aliasd.mailauth import keys, seal
from aliasd.mailauth.dns import DkimDns
from aliasd.mailauth.verify import authenticate

BODY = b"Your statement is ready.\r\n"


def _message(from_addr: str = "alerts@bank.example", subject: str = "Statement") -> bytes:
    return (
        f"From: Bank <{from_addr}>\r\nTo: github.com@alias.example\r\nSubject: {subject}\r\n"
        "Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@bank.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
    ).encode() + BODY


@pytest.fixture
def world(tmp_path, dns_server):
    """The bank (signs its mail, p=reject), our settings (alias.example), both in DNS."""
    bank = load_settings(environ={}, data_dir=str(tmp_path / "bank"), dkim_selector="bank1")
    ours = load_settings(environ={}, data_dir=str(tmp_path / "ours"),
                         dns_resolver=dns_server.address, authserv_id="mx.alias.example",
                         dns_timeout=1.0)  # fmt: skip
    for key in keys.signing_keys(bank, "bank.example") + keys.signing_keys(ours, "alias.example"):
        dns_server.add(key.dns_name, "TXT", key.dns_txt())
    dns_server.add("_dmarc.bank.example", "TXT", "v=DMARC1; p=reject; rua=mailto:d@bank.example")
    dns_server.add("bank.example", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    return bank, ours, dns_server


def _signed(bank, message: bytes | None = None) -> bytes:
    message = message or _message()
    header = keys.dkim_sign(bank, "bank.example", message, ["from", "to", "subject", "date"])
    assert header
    return header + message


def _check(ours, message: bytes, sender="alerts@bank.example", client="192.0.2.10"):
    from_header = re.search(rb"^From: (.*)\r$", message, re.M).group(1)
    return authenticate(ours, message=message, sender=sender, client_addr=client,
                        helo="mail.bank.example", from_header=from_header)  # fmt: skip


def test_signed_mail_from_an_spf_listed_host_passes_everything(world):
    bank, ours, _ = world
    results = _check(ours, _signed(bank))
    assert results.spf == "pass" and results.dkim_summary == "pass"
    assert results.dmarc.result == "pass" and results.dmarc.policy == "reject"
    value = results.header_value("mx.alias.example")
    assert value.startswith("mx.alias.example; dkim=pass header.d=bank.example")
    assert "spf=pass smtp.mailfrom=alerts@bank.example" in value
    assert "dmarc=pass header.from=bank.example policy.dmarc=reject" in value
    assert results.event_text() == "spf=pass dkim=pass dmarc=pass (p=reject) arc=none"


def test_an_altered_body_fails_dkim_and_a_foreign_host_fails_dmarc(world):
    bank, ours, _ = world
    tampered = _signed(bank).replace(b"ready", b"READY")
    results = _check(ours, tampered, client="198.51.100.1")
    assert results.dkim_summary == "fail" and results.spf == "fail"
    assert results.dmarc.result == "fail" and results.dmarc.policy == "reject"


def test_unsigned_mail_has_dkim_none_and_no_dmarc_record_means_none(world):
    _, ours, _ = world
    results = _check(ours, _message("news@shop.example"), sender="news@shop.example")
    assert results.dkim_summary == "none" and results.dmarc.result == "none"
    assert "dkim=none" in results.header_value("mx.alias.example")


def test_an_unknown_signature_algorithm_is_a_permerror_not_a_crash(world):
    bank, ours, _ = world
    signed = _signed(bank).replace(b"a=rsa-sha256", b"a=rsa-sha512", 1)
    results = _check(ours, signed)
    assert results.dkim[0].result == "permerror"
    assert "unknown signature algorithm" in results.dkim[0].reason
    assert results.dmarc.result == "pass"  # SPF is aligned


def test_dns_that_never_answers_gives_temperror_and_the_message_still_gets_results(world):
    bank, ours, dns_server = world
    dns_server.silent.update({"bank1._domainkey.bank.example", "_dmarc.bank.example"})
    results = _check(ours, _signed(bank))
    assert results.dkim[0].result == "temperror"
    assert results.dmarc.result == "temperror"
    assert "dkim=temperror" in results.header_value("mx.alias.example")


def _seal(ours, message: bytes, domain: str = "alias.example") -> bytes:
    results = _check(ours, message)
    value = results.header_value(ours.effective_authserv_id)
    arc_set = seal.seal(ours, domain, message, value)
    assert len(arc_set) == 3, arc_set
    head = "".join(f"{n}: {v.replace(chr(10), chr(13) + chr(10))}\r\n" for n, v in arc_set)
    return head.encode() + b"Authentication-Results: " + value.encode() + b"\r\n" + message


def _arc(ours, message: bytes):
    cv, _results, reason = dkim.arc_verify(message, dnsfunc=DkimDns(ours))
    return cv, reason


def test_a_sealed_message_verifies_and_keeps_its_original_dkim(world):
    bank, ours, _ = world
    sealed = _seal(ours, _signed(bank))
    assert _arc(ours, sealed)[0] == b"pass"
    assert dkim.verify(sealed, dnsfunc=DkimDns(ours))
    assert b"ARC-Seal: i=1; " in sealed and b"cv=none" in sealed


def test_a_second_hop_seals_with_the_next_instance_and_cv_pass(world, tmp_path):
    bank, ours, dns_server = world
    once = _seal(ours, _signed(bank))
    hop2 = ours.with_overrides(data_dir=str(tmp_path / "hop2"), authserv_id="mx.hop2.example")
    for key in keys.signing_keys(hop2, "hop2.example"):
        dns_server.add(key.dns_name, "TXT", key.dns_txt())
    results = _check(hop2, once)
    assert results.arc == "pass"
    twice = _seal(hop2, once, "hop2.example")
    assert re.search(rb"ARC-Seal: i=2; .*cv=pass", twice, re.S)
    assert _arc(hop2, twice)[0] == b"pass"


def test_a_broken_chain_is_sealed_cv_fail(world):
    bank, ours, _ = world
    once = _seal(ours, _signed(bank))
    broken = re.sub(rb"(ARC-Seal: .*?b=)([A-Za-z0-9+/]{8})", rb"\1AAAAAAAA", once, count=1,
                    flags=re.S)  # fmt: skip
    results = _check(ours, broken)
    assert results.arc == "fail"
    resealed = _seal(ours, broken)
    assert re.search(rb"ARC-Seal: i=2; .*cv=fail", resealed, re.S)


def test_a_duplicated_arc_set_fails_the_chain(world):
    bank, ours, _ = world
    once = _seal(ours, _signed(bank))
    arc_lines = b"".join(line + b"\r\n" for line in once.split(b"\r\n")
                         if line.startswith(b"ARC-"))  # fmt: skip
    doubled = arc_lines + once
    assert _check(ours, doubled).arc == "fail"


def test_results_header_parses_back_whatever_the_reasons_contain(world):
    import authres

    bank, ours, dns_server = world
    dns_server.silent.add("_dmarc.bank.example")
    tampered = _signed(bank).replace(b"ready", b"READY")
    value = _check(ours, tampered).header_value("mx.alias.example")
    parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + value)
    assert [(r.method, r.result) for r in parsed.results] == [
        ("dkim", "fail"), ("spf", "pass"), ("dmarc", "temperror"), ("arc", "none")
    ]


def test_openssl_signing_gives_dkimpys_own_signature_bytes(tmp_path):
    import hashlib

    from dkim.crypto import parse_pem_private_key

    from aliasd.mailauth import fastrsa

    settings = load_settings(environ={}, data_dir=str(tmp_path))
    (key,) = keys.signing_keys(settings, "alias.example")
    pk = parse_pem_private_key(key.private_key_pem)
    digest = hashlib.sha256(b"the canonicalized headers")
    assert fastrsa.openssl_sign(digest, pk) == fastrsa._pure_python_sign(digest.copy(), pk)


def test_openssl_verification_agrees_with_dkimpys_own(tmp_path):
    import hashlib

    from dkim.crypto import parse_pem_private_key

    from aliasd.mailauth import fastrsa

    settings = load_settings(environ={}, data_dir=str(tmp_path))
    (key,) = keys.signing_keys(settings, "alias.example")
    pk = parse_pem_private_key(key.private_key_pem)
    public = {"modulus": pk["modulus"], "publicExponent": pk["publicExponent"]}
    for text in (b"one", b"two", b"three", b"four"):
        digest = hashlib.sha256(text)
        good = fastrsa._pure_python_sign(digest.copy(), pk)
        bad = bytes([good[0] ^ 1]) + good[1:]
        other = hashlib.sha256(text + b"!")
        for sig, h in ((good, digest), (bad, digest), (good, other), (good[:-1], digest),
                       (b"", digest), (good + b"\0", digest)):  # fmt: skip
            assert fastrsa.openssl_verify(h.copy(), sig, public) == \
                fastrsa._pure_python_verify(h.copy(), sig, public)
        assert fastrsa.openssl_verify(digest.copy(), good, public)


def test_huge_headers_and_many_signatures_give_results_quickly(world):
    import time

    bank, ours, _ = world
    signed = _signed(bank)
    junk_sig = b"DKIM-Signature: v=1; a=rsa-sha256; d=x.example; s=s; h=" + b"from:" * 20000
    junk_sig += b"from; bh=AAAA; b=AAAA\r\n"
    huge = b"X-Junk: " + b"a" * 200_000 + b"\r\n" + junk_sig * 8 + signed
    started = time.monotonic()
    results = _check(ours, huge)
    assert time.monotonic() - started < 10
    assert len(results.dkim) == 5  # the first five signatures only; the bank's is the ninth
    assert results.dmarc.result == "pass"  # SPF still aligns
    assert "dkim=" in results.header_value("mx.alias.example")


def test_a_signature_whose_key_is_not_published_is_a_permerror(world):
    bank, ours, dns_server = world
    dns_server.remove("bank1._domainkey.bank.example")
    results = _check(ours, _signed(bank))
    assert (results.dkim[0].result, results.dkim[0].reason) == ("permerror", "no key for selector")


def test_a_two_megabyte_hostile_body_is_checked_and_sealed_like_any_other(world):
    """Whitespace runs and empty lines by the million: the signature still verifies,
    the seal verifies (checked by dkimpy's own helpers), the original DKIM stays."""
    from aliasd.mailauth import fastdkim

    bank, ours, _ = world
    message = _message() + b"a \t " * 400_000 + b"\r\n" * 200_000
    signed = _signed(bank, message)
    results = _check(ours, signed)
    assert results.checked and results.dkim_summary == "pass"
    sealed = _seal(ours, signed)
    with fastdkim.dkimpy_as_shipped():
        assert _arc(ours, sealed)[0] == b"pass"
        assert dkim.verify(sealed, dnsfunc=DkimDns(ours))


def test_past_the_size_bound_signatures_are_not_checked_and_the_header_says_so(world,
                                                                              monkeypatch):  # fmt: skip
    from aliasd.mailauth import verify

    bank, ours, _ = world
    monkeypatch.setattr(verify, "MAX_CHECKED_MESSAGE", 10_000)
    results = _check(ours, _signed(bank, _message() + b"x" * 20_000 + b"\r\n"))
    assert not results.checked and results.dkim == []
    assert results.spf == "pass" and results.dmarc.result == "pass"  # SPF still aligns
    assert 'dkim=none reason="message too large to check"' in results.header_value("mx.a.example")
    assert results.event_text().startswith("spf=pass dkim=none (not checked: too large)")


def test_an_arc_chain_longer_than_the_bound_fails_without_being_checked(world):
    bank, ours, _ = world
    once = _seal(ours, _signed(bank))
    arc_lines = [line for line in once.split(b"\r\n") if line.startswith(b"ARC-Seal:")]
    padded = b"".join(arc_lines[0].replace(b"i=1;", f"i={n};".encode()) + b"\r\n"
                      for n in range(2, 13)) + once  # fmt: skip
    results = _check(ours, padded)
    assert results.arc == "fail" and "more than 10 ARC sets" in results.arc_reason

"""aliasd's DKIM signature on forwarded mail with one-click headers, in-process (MailPath
with the real scanner, both database engines, the tests' DNS server): what is signed,
and bad input (too large, no key, broken headers) passing unsigned, never refused, with
the reason kept with the event. Through Postfix: tests/test_deliver_postfix.py."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aliasd.core import aliases as core
from aliasd.mailauth import signing
from aliasd.milter.processing import Envelope, MailPath
from aliasd.models import MailEvent

HEADERS = [
    ("From", b"GitHub <noreply@github.com>"),
    ("To", b"github.com@example.net"),
    ("Subject", b"Your pull request"),
    ("Date", b"Wed, 25 Nov 2026 10:00:00 +0000"),
    ("Message-ID", b"<pr-1@github.com>"),
]


@pytest.fixture
def path(database, dns_settings, dns_server):
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "github.com@example.net", alice, site="github.com")
    dns_server.add("github.com", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    mailpath = MailPath(dns_settings.with_overrides(
        authserv_id="mx.aliasd.test", web_base_url="https://aliases.example.net"), database)
    yield mailpath
    mailpath.close()


def _process(path: MailPath, headers=None, body: bytes = b"It was merged.\r\n", **kw):
    envelope = Envelope(sender="noreply@github.com", recipients=["github.com@example.net"],
                        client_addr="192.0.2.1", helo="mail.github.com", queue_id="Q1",
                        headers=list(HEADERS if headers is None else headers),
                        body=bytearray(body), size=len(body) + 300, **kw)  # fmt: skip
    return path.process(envelope)


def _ours(verdict) -> list[dict]:
    found = []
    for name, value in verdict.transform.insert_headers if verdict.transform else []:
        if name == "DKIM-Signature":
            text = "".join(value.split())
            found.append(dict(t.split("=", 1) for t in text.split(";") if "=" in t))
    return [tags for tags in found if tags["d"] == "example.net"]


def _event_auth(database) -> str:
    with database.session() as s:
        return s.scalars(select(MailEvent).order_by(MailEvent.id.desc())).first().auth


def test_forwarded_mail_with_one_click_headers_is_signed_over_them_before_the_seal(path,
                                                                                  database):
    verdict = _process(path)
    assert verdict.status == "accept"
    (tags,) = _ours(verdict)
    assert tags["c"] == "relaxed/relaxed" and tags["a"] == "rsa-sha256"
    signed = tags["h"].split(":")
    assert {"from", "to", "subject", "date", "message-id", "reply-to"} <= set(signed)
    # oversigned: a List-Unsubscribe added later breaks it rather than borrowing it
    assert signed.count("list-unsubscribe") == 2 and signed.count("list-unsubscribe-post") == 2
    (ams,) = verdict.header("ARC-Message-Signature")
    assert "dkim-signature" in ams  # the seal was made after, over our signature
    assert _event_auth(database).endswith(" arc=none signed=example.net")


def test_with_an_ed25519_key_there_are_two_signatures(path):
    path.settings = path.settings.with_overrides(dkim_ed25519=True)
    verdict = _process(path)
    assert sorted(t["a"] for t in _ours(verdict)) == ["ed25519-sha256", "rsa-sha256"]


def test_the_setting_off_or_no_one_click_headers_means_no_signature(path, database):
    path.settings = path.settings.with_overrides(forward_dkim_sign=False)
    verdict = _process(path)
    assert verdict.header("List-Unsubscribe-Post") and not _ours(verdict)
    assert _event_auth(database).endswith(" arc=none")
    path.settings = path.settings.with_overrides(forward_dkim_sign=True, web_base_url="")
    verdict = _process(path)
    assert not verdict.header("List-Unsubscribe") and not _ours(verdict)


def test_without_the_checks_the_message_is_still_signed(path):
    path.settings = path.settings.with_overrides(mail_auth_enabled=False)
    verdict = _process(path)
    assert len(_ours(verdict)) == 1 and verdict.header("Authentication-Results") == []


def test_a_message_the_milter_did_not_see_whole_passes_unsigned(path, database):
    verdict = _process(path, truncated=True)
    assert verdict.status == "accept" and verdict.reply is None and not _ours(verdict)
    assert verdict.header("List-Unsubscribe-Post")
    assert _event_auth(database).endswith("signed=none (message too large to sign)")


def test_past_the_size_bound_the_message_passes_unsigned(path, database):
    path.settings = path.settings.with_overrides(max_scan_size=12 * 1024 * 1024)
    body = b"x" * 76 + b"\r\n"
    verdict = _process(path, body=body * (signing.MAX_SIGNED_MESSAGE // len(body) + 10))
    assert verdict.status == "accept" and not _ours(verdict)
    assert _event_auth(database).endswith("signed=none (message too large to sign)")


def test_a_missing_key_passes_unsigned_and_says_why(path, database, tmp_path):
    not_a_dir = tmp_path / "keys-file"
    not_a_dir.write_text("not a directory")
    path.settings = path.settings.with_overrides(dkim_keys_dir=str(not_a_dir))
    verdict = _process(path)
    assert verdict.status == "accept" and verdict.reply is None and not _ours(verdict)
    assert "signed=none (no signing key for example.net" in _event_auth(database)


@pytest.mark.parametrize("headers, reason", [
    ([h for h in HEADERS if h[0] != "From"], "no From: header"),
    ([*HEADERS, ("From", b"Someone <else@evil.example>")], "more than one From: header"),
])  # fmt: skip
def test_broken_headers_pass_unsigned(path, database, headers, reason):
    verdict = _process(path, headers=headers)
    assert verdict.status == "accept" and verdict.reply is None and not _ours(verdict)
    assert _event_auth(database).endswith(f"signed=none ({reason})")


def test_hostile_header_bytes_never_refuse_the_message(path):
    headers = [*HEADERS, ("Cc", b"\xff\xfe\x00 \r\n\r\n\t broken"), ("Subject", b"\x00" * 3000)]
    verdict = _process(path, headers=headers)
    assert verdict.status == "accept" and verdict.reply is None

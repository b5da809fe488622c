"""The reply rules without Postfix: header rewriting of both directions, who may send
through a reverse alias (SMTP AUTH, trusted networks, SPF and DKIM checked against the
tests' own DNS server), and refusals: strangers, several recipients, disabled contacts,
DNS that does not answer (451, never 5xx)."""

from __future__ import annotations

import dkim
import pytest

from aliasd.core import aliases as core
from aliasd.core import reverse_aliases as ra
from aliasd.core.reply_headers import (
    HeaderInjection,
    check_display_name,
    correspondent_of,
    forward_preserve,
    reply_edits,
    signature_covers_forward_edits,
)
from aliasd.mailauth.keys import signing_keys
from aliasd.milter.processing import Envelope, MailPath

OWNER = "alice@real.example"


def test_display_names_that_could_inject_headers_are_refused():
    for bad in ("Eve\r\nBcc: x@y.example", "Eve\nX: y", "Eve\x00", "Eve\u2028x", "E" * 101):
        with pytest.raises(HeaderInjection):
            check_display_name(bad)
    assert check_display_name("  Shop   Account ") == "Shop Account"
    assert check_display_name("") is None


def test_reply_to_names_the_correspondent_and_oversigning_is_seen():
    headers = [("From", "Shop <news@shop.example>"), ("Reply-To", "Help <help@shop.example>")]
    assert correspondent_of(headers) == ("Help", "help@shop.example")
    edits = forward_preserve(headers, "ra-1@example.net", ("Help", "help@shop.example"))
    assert edits.apply(headers)[1] == ("Reply-To",
                                       '"Help (help at shop.example)" <ra-1@example.net>')
    assert not signature_covers_forward_edits([("DKIM-Signature", "v=1; d=a.example; h=from:to; b=x")])
    assert signature_covers_forward_edits([("DKIM-Signature", "v=1; d=a.example; h=From : Reply-To; b=x")])
    receipt = ("DKIM-Signature", "v=1; d=a.example; h=from:Disposition-Notification-To; b=x")
    assert not signature_covers_forward_edits([receipt])  # oversigned, absent: not dropped
    assert signature_covers_forward_edits([receipt, ("Disposition-Notification-To", "t@a.example")])


def test_reply_headers_lose_every_trace_of_the_owner():
    headers = [
        ("Received", "from laptop ([10.0.0.9]) by smtp.real.example"),
        ("From", f"Alice <{OWNER}>"), ("To", "ra-1@example.net"), ("Cc", f"{OWNER}"),
        ("Subject", "Re: hello"), ("Message-ID", "<id1@real.example>"),
        ("References", "<a@shop.example> <id0@real.example>"),
        ("X-Originating-IP", "[10.0.0.9]"), ("X-Custom", "=?utf-8?q?alice=40real=2Eexample?="),
        ("User-Agent", "Mail 1.0"), ("Return-Receipt-To", OWNER),
    ]
    out = reply_edits(headers, alias_address="shop@example.net", alias_name='Evil"\r\nBcc: x',
                      correspondent="help@shop.example", correspondent_name="Help",
                      owner_addresses={OWNER}).apply(headers)
    text = "\n".join(f"{n}: {v}" for n, v in out)
    assert "real.example" not in text and "10.0.0.9" not in text and "\r" not in text
    names = [n for n, _ in out]
    assert names.count("From") == 1 and "Cc" not in names and "X-Custom" not in names
    assert ("Message-ID", "<id1@example.net>") in out
    assert ("References", "<a@shop.example> <id0@example.net>") in out
    assert ("User-Agent", "Mail 1.0") in out
    assert dict(out)["To"] == "Help <help@shop.example>"


@pytest.fixture
def contact(dns_settings, database):
    with database.session() as s:
        alice = core.create_user(s, "alice", OWNER)
        core.create_domain(s, "example.net", alice)
        alias = core.create_alias(s, "shop@example.net", alice)
        return ra.for_correspondent(s, alias, "help@shop.example").address


def reply(address: str, *, sender=OWNER, client="192.0.2.7", auth=None, extra_rcpt=None,
          signed_by=None) -> Envelope:
    message = (f"From: Alice <{sender}>\r\nTo: {address}\r\nSubject: Re: order\r\n"
               "Message-ID: <m1@real.example>\r\n\r\nThanks.\r\n").encode()
    if signed_by is not None:
        key = signed_by[0]
        message = dkim.sign(message, key.selector.encode(), key.domain.encode(),
                            key.dkimpy_private_key(), include_headers=[b"from", b"to",
                                                                       b"subject"]) + message
    head, _, body = message.partition(b"\r\n\r\n")
    headers = []
    for line in head.replace(b"\r\n ", b" ").replace(b"\r\n\t", b"\t").split(b"\r\n"):
        name, _, value = line.partition(b":")
        headers.append((name.decode(), value.strip()))
    return Envelope(sender=sender, recipients=[address, *([extra_rcpt] if extra_rcpt else [])],
                    client_addr=client, helo="smtp.real.example", auth_authen=auth,
                    headers=headers, body=bytearray(body), size=len(message))


def process(settings, database, envelope):
    path = MailPath(settings, database)
    try:
        return path.process(envelope)
    finally:
        path.close()


def test_smtp_auth_or_a_trusted_network_lets_the_owner_send(dns_settings, database, contact):
    verdict = process(dns_settings, database, reply(contact, auth="alice"))
    assert verdict.status == "accept" and verdict.transform.exclusive
    assert verdict.transform.add_recipients == ["help@shop.example"]
    assert verdict.transform.new_sender == "shop@example.net"
    assert verdict.transform.insert_headers[0][0] == "DKIM-Signature"
    trusted = dns_settings.with_overrides(reply_trusted_networks=["192.0.2.0/24"])
    assert process(trusted, database, reply(contact)).status == "accept"


def test_spf_or_dkim_of_the_owners_domain_lets_the_owner_send(dns_settings, dns_server,
                                                              database, contact):
    assert process(dns_settings, database, reply(contact)).status == "reject"  # nothing holds
    dns_server.add("real.example", "TXT", "v=spf1 ip4:192.0.2.7 -all")
    assert process(dns_settings, database, reply(contact)).status == "accept"
    dns_server.remove("real.example", "TXT")
    keys = signing_keys(dns_settings, "real.example")  # the owner's provider's key
    dns_server.add(keys[0].dns_name, "TXT", keys[0].dns_txt())
    assert process(dns_settings, database, reply(contact, signed_by=keys)).status == "accept"


def test_strangers_several_recipients_and_disabled_contacts_are_refused(dns_settings, database,
                                                                        contact):
    stranger = process(dns_settings, database, reply(contact, sender="eve@evil.example",
                                                     auth="eve"))
    assert stranger.status == "reject" and stranger.reply[0] == "550"
    tagged = contact.replace("@", "+tag@")  # lookupd strips the extension: so do we
    stranger = process(dns_settings, database, reply(tagged, sender="eve@evil.example"))
    assert stranger.status == "reject" and stranger.reply[0] == "550"
    several = process(dns_settings, database, reply(contact, auth="alice",
                                                    extra_rcpt="bob@elsewhere.example"))
    assert several.reply[:2] == ("550", "5.5.3")
    with database.session() as s:
        ra.set_enabled(s, ra.list_for_alias(s, ra.resolve(s, contact).alias_id)[0], False)
    disabled = process(dns_settings, database, reply(contact, auth="alice"))
    assert disabled.reply[0] == "550" and "disabled" in disabled.reply[2]
    with database.session() as s:
        assert ra.resolve(s, contact).enabled is False
        assert ra.list_for_alias(s, ra.resolve(s, contact).alias_id)[0].refused_count == 3


def test_dns_that_does_not_answer_defers_the_reply(dns_settings, dns_server, database, contact):
    dns_server.silent.add("real.example")
    slow = dns_settings.with_overrides(dns_timeout=1.0)
    verdict = process(slow, database, reply(contact))
    assert verdict.status == "tempfail" and verdict.reply[0] == "451"


def test_database_down_defers_the_reply(dns_settings, contact):
    from aliasd.db import Database

    down = Database("postgresql+psycopg://aliasd@127.0.0.1:1/aliasd")
    verdict = process(dns_settings, down, reply(contact, auth="alice"))
    assert verdict.status == "tempfail" and verdict.reply[0] == "451"

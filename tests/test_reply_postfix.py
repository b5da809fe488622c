"""Replies through reverse aliases, end to end: swaks → a real Postfix with aliasd's
lookupd and milter → a capture server standing in for the owner's mailbox provider and
for the correspondents' MX hosts. DKIM signatures are verified with dkimpy against the
keys `aliasd dns` prints, served by the tests' own DNS server. One world per engine."""

from __future__ import annotations

import email
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dkim
import pytest
from sqlalchemy import select

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.mailauth.dns import DkimDns
from aliasd.models import ReverseAlias
from aliasd.postfix.config_lines import postfix_table
from aliasd.postfix.milter_lines import postfix_milter_settings
from aliasd.postfix.reply_lines import reply_section
from tests.harness.cli import settings_env
from tests.harness.databases import open_clean_database
from tests.harness.dns import DnsServer
from tests.harness.net import free_port, wait_for_milter, wait_for_port
from tests.harness.postfix import (
    CaptureServer,
    PostfixInstance,
    postmap_query,
    smtp_reply_codes,
    swaks,
)
from tests.harness.processes import start_logged, stop_process

pytestmark = pytest.mark.postfix

MAILBOX = "alice@real.example"
ALIAS = "shop@example.net"
REWRITE_ALIAS = "news@rewrite.example"
REVERSE = re.compile(r"ra-[0-9a-f]{26}@[a-z.]+")


class World:
    pass


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"reply-{request.param}")
    db = open_clean_database(request.param, base, request)
    with db.session() as s:
        alice = core.create_user(s, "alice", MAILBOX)
        core.create_domain(s, "example.net", alice)
        rewrite = core.create_domain(s, "rewrite.example", alice)
        rewrite.reply_mode = "rewrite"
        alias = core.create_alias(s, ALIAS, alice, site="shop.example")
        alias.reply_name = "Shop Account"
        core.create_alias(s, REWRITE_ALIAS, alice)
    dns_server = DnsServer().start()
    settings = load_settings(
        environ={}, data_dir=str(base / "data"), database_url=db.url, env="development",
        secret_key="test", milter_listen=f"127.0.0.1:{free_port()}",
        dns_resolver=dns_server.address, reply_trusted_networks=["127.0.0.1/32"],
    )
    env = settings_env(settings) | {
        "ALIASD_MILTER_LISTEN": settings.milter_listen,
        "ALIASD_DNS_RESOLVER": dns_server.address,
        "ALIASD_REPLY_TRUSTED_NETWORKS": "127.0.0.1/32",
        "ALIASD_BLOCKLIST_RELOAD_COMMAND": "true",
    }
    for domain in ("example.net", "rewrite.example"):  # what the admin publishes
        zone = subprocess.run([sys.executable, "-m", "aliasd", "dns", domain], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert zone.returncode == 0, zone.stderr
        dns_server.add_zone_lines(zone.stdout)
    pf_dir = Path(tempfile.mkdtemp(prefix="aliasd-reply-pf-", dir="/tmp"))
    os.chmod(pf_dir, 0o755)
    milter = start_logged([sys.executable, "-m", "aliasd", "milter"], env, base / "milter.log")
    lookup_port = free_port()
    lookupd = start_logged(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{lookup_port}",
         "--tcp", ""], env, base / "lookupd.log")  # fmt: skip
    table = postfix_table("socketmap", f"127.0.0.1:{lookup_port}", "virtual")
    capture = CaptureServer()
    capture.start()
    main_cf = {"virtual_alias_domains": table, "virtual_alias_maps": table,
               "recipient_delimiter": "+", **postfix_milter_settings(settings),
               # as `aliasd postfix-config` prints it
               **dict(line.split(" = ", 1) for line in reply_section(settings).lines)}
    postfix = PostfixInstance(pf_dir / "pf", relay_port=capture.port, main_cf=main_cf)
    wait_for_port(lookup_port)
    wait_for_milter(settings.milter_listen)
    postfix.start()
    w = World()
    w.db, w.settings, w.postfix, w.capture, w.base = db, settings, postfix, capture, base
    w.table = table
    yield w
    for proc in (milter, lookupd):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    postfix.stop()
    capture.stop()
    dns_server.stop()
    for proc in (milter, lookupd):
        stop_process(proc)
    shutil.rmtree(pf_dir, ignore_errors=True)
    db.dispose()


def send(world, **kw):
    # lookupd answers TEMP (451) until its replica has loaded; retry briefly.
    deadline = time.monotonic() + 20
    while True:
        result = swaks(world.postfix.smtp_port, **kw)
        codes = smtp_reply_codes(result.stdout)
        if "451" not in codes or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def wait_known(world, address: str, found: bool = True) -> None:
    """Until lookupd's replica has followed the change feed to ``address``."""
    deadline = time.monotonic() + 10
    while (postmap_query(address, world.table)[0] == 0) != found:
        assert time.monotonic() < deadline, f"lookupd never saw {address}"
        time.sleep(0.1)


def header_block(data: bytes) -> str:
    return data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")


def dkim_domains(world, data: bytes) -> set[str]:
    """d= of each signature dkimpy verifies against the keys our DNS server serves."""
    verifier = dkim.DKIM(data)
    count = header_block(data).lower().count("\ndkim-signature:") + \
        header_block(data).lower().startswith("dkim-signature:")
    found = set()
    for index in range(count):
        if verifier.verify(idx=index, dnsfunc=DkimDns(world.settings)):
            found.add(verifier.domain.decode())
    return found


def correspondent_writes(world, marker: str, to: str = ALIAS,
                         sender: str = "support@shop.example") -> email.message.Message:
    data = (f"From: Shop Support <{sender}>\nTo: {to}\nSubject: order {marker}\n"
            f"Message-ID: <{marker}@shop.example>\n\nYour order {marker} shipped.\n")
    result = send(world, sender=sender, to=to, data=data)
    assert result.returncode == 0, result.stdout
    captured = world.capture.wait_for(lambda m: marker.encode() in m.data)
    assert captured.rcpt_tos == [MAILBOX]
    return email.message_from_bytes(captured.data), captured


def test_forwarded_mail_carries_the_reverse_alias_and_the_owner_replies_as_the_alias(world):
    forwarded, captured = correspondent_writes(world, "m1001")
    # The ARC set aliasd adds covers the message as it left, Reply-To: included.
    cv, _results, reason = dkim.arc_verify(captured.data, dnsfunc=DkimDns(world.settings))
    assert cv == dkim.CV_Pass, reason
    # Preserve mode: From: untouched, the reverse alias in Reply-To:.
    assert forwarded["From"] == "Shop Support <support@shop.example>"
    reverse = REVERSE.search(forwarded["Reply-To"]).group(0)
    assert reverse.endswith("@example.net")
    assert "support at shop.example" in forwarded["Reply-To"]
    wait_known(world, reverse)

    reply = (
        "Received: from laptop.real.example (laptop [10.9.8.7]) by smtp.real.example\n"
        f"From: Alice Example <{MAILBOX}>\nTo: {forwarded['Reply-To']}\n"
        "Cc: Alice <alice@real.example>\nSubject: Re: order m1001\n"
        "Message-ID: <r2002@real.example>\nIn-Reply-To: <m1001@shop.example>\n"
        "X-Originating-IP: [10.9.8.7]\nX-Mailer: TestMail 1.0\n"
        "Disposition-Notification-To: alice@real.example\n\n"
        "Thanks! (reply r2002)\n"
    )
    result = send(world, sender=MAILBOX, to=reverse, data=reply)
    assert result.returncode == 0, result.stdout
    out = world.capture.wait_for(lambda m: b"r2002)" in m.data)
    assert out.rcpt_tos == ["support@shop.example"]
    assert out.mail_from == ALIAS  # bounces come back to the alias, and on to Alice
    msg = email.message_from_bytes(out.data)
    assert msg["From"] == f'"Shop Account" <{ALIAS}>' or msg["From"] == f"Shop Account <{ALIAS}>"
    assert "support@shop.example" in msg["To"]
    assert msg["In-Reply-To"] == "<m1001@shop.example>"
    assert msg["Message-ID"] == "<r2002@example.net>"  # kept, minus the owner's domain
    headers = header_block(out.data).lower()
    assert "real.example" not in headers and "10.9.8.7" not in headers, headers
    # Neither the owner's server (Postfix's own Received:) nor the reverse alias shows.
    assert "received:" not in headers and "ra-" not in headers, headers
    assert msg["X-Mailer"] == "TestMail 1.0"
    assert dkim_domains(world, out.data) == {"example.net"}

    with world.db.session() as s:
        row = s.scalar(select(ReverseAlias).where(ReverseAlias.address == reverse))
        assert (row.forwarded_count, row.sent_count) == (1, 1)


def test_a_stranger_writing_to_a_reverse_alias_is_refused_and_counted(world):
    forwarded, _ = correspondent_writes(world, "m1003")
    reverse = REVERSE.search(forwarded["Reply-To"]).group(0)
    wait_known(world, reverse)
    result = send(world, sender="mallory@evil.example", to=reverse,
                  header={"From": "mallory@evil.example", "Subject": "relay m1004"})
    assert result.returncode != 0 and "550" in smtp_reply_codes(result.stdout), result.stdout
    # Claiming to be the owner in From: alone does not help either.
    result = send(world, sender="mallory@evil.example", to=reverse,
                  header={"From": MAILBOX, "Subject": "relay m1005"})
    assert "550" in smtp_reply_codes(result.stdout), result.stdout
    time.sleep(1)
    assert not [m for m in world.capture.messages if b"relay m100" in m.data]
    with world.db.session() as s:
        row = s.scalar(select(ReverseAlias).where(ReverseAlias.address == reverse))
        assert row.refused_count == 2
        assert row.last_refused_sender == "mallory@evil.example"


def test_malformed_or_deleted_reverse_aliases_are_refused_at_rcpt(world):
    forwarded, _ = correspondent_writes(world, "m1006", sender="sales@shop.example")
    reverse = REVERSE.search(forwarded["Reply-To"]).group(0)
    from aliasd.core import reverse_aliases as ra

    with world.db.session() as s:
        ra.delete(s, s.scalar(select(ReverseAlias).where(ReverseAlias.address == reverse)))
    wait_known(world, reverse, found=False)
    for address in (reverse, "ra-nothere@example.net", "ra-@example.net"):
        result = send(world, sender=MAILBOX, to=address, header={"Subject": "x"})
        assert "550" in smtp_reply_codes(result.stdout), (address, result.stdout)


def test_rewrite_mode_delivers_a_dmarc_aligned_signed_from(world):
    forwarded, captured = correspondent_writes(world, "m1007", to=REWRITE_ALIAS,
                                               sender="editor@paper.example")
    name, address = email.utils.parseaddr(forwarded["From"])
    assert REVERSE.fullmatch(address) and address.endswith("@rewrite.example")
    assert name == "Shop Support (editor at paper.example)"
    # DMARC alignment: the From: domain is the domain of a signature that verifies.
    assert "rewrite.example" in dkim_domains(world, captured.data)


def test_preserve_mode_rewrites_when_a_signature_covers_reply_to(world):
    """Adding Reply-To: would break a signature that oversigns it (rspamd's default), so
    aliasd rewrites From: instead and signs the result itself."""
    data = ("DKIM-Signature: v=1; a=rsa-sha256; d=shop.example; s=s1; c=relaxed/relaxed;\n"
            " h=from:reply-to:subject:to; bh=AAAA; b=AAAA\n"
            "From: Shop Support <support@shop.example>\nTo: shop@example.net\n"
            "Subject: m1010\n\nSigned over Reply-To.\n")
    result = send(world, sender="support@shop.example", to=ALIAS, data=data)
    assert result.returncode == 0, result.stdout
    captured = world.capture.wait_for(lambda m: b"m1010" in m.data)
    msg = email.message_from_bytes(captured.data)
    assert msg["Reply-To"] is None
    assert REVERSE.search(msg["From"]) and "support at shop.example" in msg["From"]
    assert "example.net" in dkim_domains(world, captured.data)


def test_bounce_of_a_reply_comes_back_to_the_owner(world):
    forwarded, _ = correspondent_writes(world, "m1011", sender="gone@shop.example")
    reverse = REVERSE.search(forwarded["Reply-To"]).group(0)
    wait_known(world, reverse)
    world.capture.reject_rcpt = lambda addr: "550 5.1.1 no such user" if addr == "gone@shop.example" else None
    try:
        result = send(world, sender=MAILBOX, to=reverse,
                      data=f"From: {MAILBOX}\nTo: {reverse}\nSubject: bounce m1012\n\nhello\n")
        assert result.returncode == 0, result.stdout
        bounce = world.capture.wait_for(
            lambda m: m.rcpt_tos == [MAILBOX] and b"no such user" in m.data, timeout=30)
    finally:
        world.capture.reject_rcpt = lambda _addr: None
    assert bounce.mail_from in ("", "<>")


def test_a_reply_to_a_reverse_alias_with_an_extension_leaves_no_received_header(world):
    """The owner may add an extension (ra-…+note@): lookupd and the milter resolve it
    like the bare reverse alias, so Postfix's own Received: must go just the same."""
    forwarded, _ = correspondent_writes(world, "m1020", sender="help@shop.example")
    reverse = REVERSE.search(forwarded["Reply-To"]).group(0)
    wait_known(world, reverse)
    local, _, domain = reverse.partition("@")
    result = send(world, sender=MAILBOX, to=f"{local}+thanks@{domain}",
                  data=f"From: {MAILBOX}\nTo: {reverse}\nSubject: Re: m1020\n\n(reply r1021)\n")
    assert result.returncode == 0, result.stdout
    out = world.capture.wait_for(lambda m: b"r1021)" in m.data)
    assert out.rcpt_tos == ["help@shop.example"]
    headers = header_block(out.data).lower()
    assert "received:" not in headers and "sender.example" not in headers, headers
    assert "ra-" not in headers, headers


def test_a_reply_whose_message_id_names_a_host_of_the_owners_domain_hides_that_domain(world):
    """Mail programs and the owner's own server write Message-IDs on their host name
    (laptop.real.example): that names the owner's domain as much as the bare domain."""
    forwarded, _ = correspondent_writes(world, "m1022", sender="desk@shop.example")
    reverse = REVERSE.search(forwarded["Reply-To"]).group(0)
    wait_known(world, reverse)
    reply = (f"From: {MAILBOX}\nTo: {reverse}\nSubject: Re: m1022\n"
             "Message-ID: <r1023.x@laptop.real.example>\n"
             "In-Reply-To: <m1022@shop.example>\n"
             "References: <m1022@shop.example> <r1000@mx.real.example>\n\n(reply r1023)\n")
    result = send(world, sender=MAILBOX, to=reverse, data=reply)
    assert result.returncode == 0, result.stdout
    out = world.capture.wait_for(lambda m: b"r1023)" in m.data)
    msg = email.message_from_bytes(out.data)
    assert "real.example" not in header_block(out.data).lower(), header_block(out.data)
    assert msg["Message-ID"] == "<r1023.x@example.net>"  # the thread still holds
    assert msg["In-Reply-To"] == "<m1022@shop.example>"
    assert msg["References"] == "<m1022@shop.example> <r1000@example.net>"


def test_mail_from_a_disabled_contact_still_names_its_reverse_alias_so_answering_is_refused(
        world):
    """Disabling a contact stops replies through it. The next mail from that contact
    must not arrive answerable at its real address: the owner's mail program would then
    send the answer straight from the owner's mailbox, revealing it."""
    from aliasd.core import reverse_aliases as ra

    forwarded, _ = correspondent_writes(world, "m1024", sender="tracker@shop.example")
    reverse = REVERSE.search(forwarded["Reply-To"]).group(0)
    with world.db.session() as s:
        ra.set_enabled(s, s.scalar(select(ReverseAlias).where(ReverseAlias.address == reverse)),
                       False)
    wait_known(world, reverse, found=False)
    again, _ = correspondent_writes(world, "m1025", sender="tracker@shop.example")
    assert again["From"] == "Shop Support <tracker@shop.example>"
    assert again["Reply-To"] and reverse in again["Reply-To"], again["Reply-To"]
    result = send(world, sender=MAILBOX, to=reverse,
                  data=f"From: {MAILBOX}\nTo: {reverse}\nSubject: Re: m1025\n\n(reply r1026)\n")
    assert "550" in smtp_reply_codes(result.stdout), result.stdout
    time.sleep(1)
    assert not [m for m in world.capture.messages if b"r1026)" in m.data]
    with world.db.session() as s:
        row = s.scalar(select(ReverseAlias).where(ReverseAlias.address == reverse))
        assert row.forwarded_count == 2


def test_forwarded_mail_asks_for_no_receipt_the_owners_mailbox_would_send(world):
    """A read-receipt request makes the owner's mail program write to the address it
    names, from the owner's mailbox, past the reverse alias: forwarded mail drops it."""
    data = ("From: Shop Support <promo@shop.example>\nTo: shop@example.net\n"
            "Subject: m1027\nDisposition-Notification-To: track@shop.example\n"
            "Return-Receipt-To: track@shop.example\n"
            "X-Confirm-Reading-To: track@shop.example\n\nDid you read m1027?\n")
    result = send(world, sender="promo@shop.example", to=ALIAS, data=data)
    assert result.returncode == 0, result.stdout
    captured = world.capture.wait_for(lambda m: b"m1027" in m.data)
    msg = email.message_from_bytes(captured.data)
    assert REVERSE.search(msg["Reply-To"])
    assert "track@" not in header_block(captured.data), header_block(captured.data)
    # Signed over the request, the message is rewritten and signed by aliasd instead.
    data = ("DKIM-Signature: v=1; a=rsa-sha256; d=shop.example; s=s1; c=relaxed/relaxed;\n"
            " h=from:subject:to:disposition-notification-to; bh=AAAA; b=AAAA\n"
            "From: Shop Support <promo@shop.example>\nTo: shop@example.net\n"
            "Subject: m1028\nDisposition-Notification-To: track@shop.example\n\nRead?\n")
    result = send(world, sender="promo@shop.example", to=ALIAS, data=data)
    assert result.returncode == 0, result.stdout
    captured = world.capture.wait_for(lambda m: b"m1028" in m.data)
    msg = email.message_from_bytes(captured.data)
    assert "track@" not in header_block(captured.data), header_block(captured.data)
    assert REVERSE.search(msg["From"]) and msg["Reply-To"] is None
    assert "example.net" in dkim_domains(world, captured.data)


def test_forwarded_mail_names_no_reply_address_that_some_mail_programs_prefer_to_reply_to(
        world):
    """nmh answers Mail-Reply-To: before Reply-To:; mutt, Thunderbird and notmuch answer
    Mail-Followup-To: in a reply to all, and Gnus adds Mail-Copies-To:: straight from
    the owner's mailbox, past the reverse alias. Anyone can write them, to learn it."""
    data = ("From: Shop Support <deals@shop.example>\nTo: shop@example.net\n"
            "Subject: m1029\nMail-Reply-To: unmask@evil.example\n"
            "Mail-Followup-To: unmask@evil.example, shop@example.net\n"
            "Mail-Copies-To: unmask@evil.example\n\nJust reply to m1029.\n")
    result = send(world, sender="deals@shop.example", to=ALIAS, data=data)
    assert result.returncode == 0, result.stdout
    captured = world.capture.wait_for(lambda m: b"m1029" in m.data)
    msg = email.message_from_bytes(captured.data)
    assert REVERSE.search(msg["Reply-To"])
    assert "unmask@" not in header_block(captured.data), header_block(captured.data)

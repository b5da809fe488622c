"""Forwarding that arrives, through a real Postfix wired only with ``aliasd postfix-config``'s
lines, real ``aliasd lookupd`` and ``aliasd milter``, the tests' own DNS server serving
what ``aliasd dns`` printed, and a capture SMTP server standing in for the owner's
mailbox provider. No SRS or DKIM settings: the defaults must do it (only
``web_base_url``, for the one-click headers, and ``dkim_ed25519``, for a second key)."""

from __future__ import annotations

import email
import os
import re
import shutil
import smtplib
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
from aliasd.mailauth import keys
from aliasd.mailauth.dns import DkimDns
from aliasd.models import MailEvent
from aliasd.postfix.config_lines import sections
from tests.harness.cli import settings_env
from tests.harness.databases import sqlite_database
from tests.harness.dns import DnsServer
from tests.harness.net import free_port, wait_for_milter, wait_for_port
from tests.harness.postfix import CaptureServer, PostfixInstance, smtp_reply_codes, swaks
from tests.harness.processes import start_logged, stop_process

pytestmark = pytest.mark.postfix

HOST = "mx.example.net"
ALIAS = "github.com@example.net"
WEB = "https://aliases.example.net"
REWRITE_ALIAS = "news@rewrite.example"
FULL_ALIAS = "shop.example@example.net"  # forwards to a mailbox that refuses everything
FULL_MAILBOX = "Full.Box@real.example"


def _bank_message() -> bytes:
    return (
        b"From: Bank <alerts@bank.example>\r\nTo: " + ALIAS.encode() + b"\r\n"
        b"Subject: Your statement\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n"
        b"Message-ID: <stmt-1@bank.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Your December statement is ready.\r\nKind regards,\r\nThe Bank\r\n"
    )


class World:
    pass


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("deliver")
    # Postfix (user postfix) reads header_checks in the data directory: keep it traversable
    root = Path(tempfile.mkdtemp(prefix="aliasd-deliver-", dir="/tmp"))
    os.chmod(root, 0o755)
    data_dir = root / "data"
    data_dir.mkdir()
    os.chmod(data_dir, 0o755)
    (data_dir / "header_checks").write_text("")
    dns_server = DnsServer().start()
    database = sqlite_database(str(base / "aliasd.db"))
    with database.session() as session:
        owner = core.create_user(session, "alice", "alice@real.example")
        core.create_domain(session, "example.net", owner)
        core.create_alias(session, ALIAS, owner, site="github.com")
        core.create_domain(session, "rewrite.example", owner).reply_mode = "rewrite"
        core.create_alias(session, REWRITE_ALIAS, owner)
        core.create_alias(session, FULL_ALIAS, owner, destinations=[FULL_MAILBOX])
    settings = load_settings(
        environ={}, data_dir=str(data_dir), database_url=database.url, env="development",
        secret_key="test", dns_resolver=dns_server.address, authserv_id=HOST,
        lookup_socketmap=f"127.0.0.1:{free_port()}", lookup_tcp="",
        milter_listen=f"127.0.0.1:{free_port()}", blocklist_reload_command="true",
        web_base_url=WEB, dkim_ed25519=True,
    )  # fmt: skip
    env = settings_env(settings) | {
        "ALIASD_AUTHSERV_ID": HOST,
        "ALIASD_LOOKUP_SOCKETMAP": settings.lookup_socketmap,
        "ALIASD_LOOKUP_TCP": "",
        "ALIASD_MILTER_LISTEN": settings.milter_listen,
        "ALIASD_WEB_BASE_URL": WEB,
        "ALIASD_DKIM_ED25519": "true",
    }
    upgrade = subprocess.run([sys.executable, "-m", "aliasd", "db", "upgrade"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    # What the admin publishes: aliasd dns's lines, plus the host's own A record.
    zone = subprocess.run([sys.executable, "-m", "aliasd", "dns", "example.net"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert zone.returncode == 0, zone.stderr
    dns_server.add_zone_lines(zone.stdout)
    rewrite_zone = subprocess.run([sys.executable, "-m", "aliasd", "dns", "rewrite.example"],
                                  env=env, capture_output=True, text=True, timeout=120)
    assert rewrite_zone.returncode == 0, rewrite_zone.stderr
    dns_server.add_zone_lines(rewrite_zone.stdout)
    dns_server.add(HOST, "A", "127.0.0.1")
    # The original sender: signs with its own key, SPF lists the sending host, p=reject.
    bank = load_settings(environ={}, data_dir=str(base / "bank"), dkim_selector="bank2026")
    for key in keys.signing_keys(bank, "bank.example"):
        dns_server.add(key.dns_name, "TXT", key.dns_txt())
    dns_server.add("bank.example", "TXT", "v=spf1 ip4:127.0.0.1 -all")
    dns_server.add("_dmarc.bank.example", "TXT", "v=DMARC1; p=reject")

    lookupd = start_logged([sys.executable, "-m", "aliasd", "lookupd"], env, base / "lookupd.log")
    milter = start_logged([sys.executable, "-m", "aliasd", "milter"], env, base / "milter.log")
    capture = CaptureServer()
    capture.start()
    # the owner's second mailbox is full: Postfix must bounce what goes there
    capture.reject_rcpt = lambda addr: ("552 5.2.2 <full.box@real.example>: mailbox full"
                                        if addr.lower() == FULL_MAILBOX.lower() else None)
    main_cf: dict[str, str] = {}
    for section in sections(settings):
        for line in section.lines:
            if not line.startswith("#") and " = " in line:
                key, _, value = line.partition(" = ")
                main_cf[key] = value
    postfix = PostfixInstance(root / "pf", relay_port=capture.port, main_cf=main_cf)
    w = World()
    w.settings, w.env, w.dns, w.capture, w.postfix, w.bank = (
        settings, env, dns_server, capture, postfix, bank)
    w.database, w.zone, w.base, w.milter = database, zone.stdout, base, milter
    try:
        wait_for_port(int(settings.lookup_socketmap.rsplit(":", 1)[1]), timeout=30)
        wait_for_milter(settings.milter_listen)
        postfix.start()
        yield w
    finally:
        postfix.stop()
        capture.stop()
        for proc in (w.milter, lookupd):
            stop_process(proc)
        dns_server.stop()
        database.dispose()
        shutil.rmtree(root, ignore_errors=True)


def _send(w: World, data: bytes, to: str = ALIAS) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + 15
    while True:  # lookupd says TEMP until it has read the domains once
        result = swaks(w.postfix.smtp_port, to=to, sender="alerts@bank.example",
                       data=data.decode().replace("\r\n", "\n"))  # fmt: skip
        if "451" not in smtp_reply_codes(result.stdout) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def _signatures(data: bytes, dnsfunc) -> list[tuple[dict, bool]]:
    """Each DKIM-Signature's tags, top first, and whether dkimpy verifies it."""

    verifier = dkim.DKIM(data)
    out = []
    for index, value in enumerate(email.message_from_bytes(data).get_all("DKIM-Signature")):
        tags = dict(t.strip().split("=", 1) for t in "".join(value.split()).split(";") if "=" in t)
        try:
            ok = verifier.verify(idx=index, dnsfunc=dnsfunc)
        except dkim.DKIMException:  # an altered body or a malformed signature
            ok = False
        out.append((tags, ok))
    return out


def test_forwarded_mail_arrives_with_srs_sender_arc_seal_and_the_original_dkim(world):
    w = world
    message = _bank_message()
    signature = keys.dkim_sign(w.bank, "bank.example", message,
                               ["from", "to", "subject", "date", "message-id"])  # fmt: skip
    result = _send(w, signature + message)
    assert result.returncode == 0, result.stdout + result.stderr
    msg = w.capture.wait_for(lambda m: "alice@real.example" in m.rcpt_tos, timeout=30)

    assert re.match(r"^SRS0=[^=]+=[A-Z2-7]{2}=bank\.example=alerts@example\.net$", msg.mail_from)
    data = msg.data
    dnsfunc = DkimDns(w.settings)
    signatures = _signatures(data, dnsfunc)
    # the original signature survives forwarding: aliasd changed headers only
    assert [ok for tags, ok in signatures if tags["d"] == "bank.example"] == [True]
    # the ARC set verifies with the key `aliasd dns` printed (served by our DNS)
    cv, _results, reason = dkim.arc_verify(data, dnsfunc=dnsfunc)
    assert cv == b"pass", reason
    seal = re.search(rb"^ARC-Seal: (.*?)\r\n(?!\s)", data, re.M | re.S).group(1)
    tags = dict(t.strip().split(b"=", 1) for t in seal.split(b";") if b"=" in t)
    assert (tags[b"i"], tags[b"cv"], tags[b"d"]) == (b"1", b"none", b"example.net")
    ar = msg.header("Authentication-Results")
    assert ar and ar.startswith(HOST + ";"), ar
    # trace fields sit on top, newest first, above the original message's headers
    names = [line.split(b":", 1)[0].lower()
             for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line[:1] not in b" \t"]
    ours = [b"arc-seal", b"arc-message-signature", b"arc-authentication-results",
            b"authentication-results"]
    assert [names.index(n) for n in ours] == sorted(names.index(n) for n in ours)
    assert names.index(b"authentication-results") < names.index(b"subject")
    for part in ("dkim=pass header.d=bank.example", "spf=pass smtp.mailfrom=alerts@bank.example",
                 "dmarc=pass header.from=bank.example policy.dmarc=reject", "arc=none"):
        assert part in " ".join(ar.split()), ar
    deadline = time.monotonic() + 5  # the milter commits events just after answering
    while True:
        with w.database.session() as s:
            event = s.scalars(select(MailEvent).order_by(MailEvent.id.desc())).first()
        if (event is not None and event.subject == "Your statement") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert event.auth == "spf=pass dkim=pass dmarc=pass (p=reject) arc=none signed=example.net"


def test_one_click_headers_arrive_under_a_dkim_signature_of_the_alias_domain(world):
    """RFC 8058 section 4 (and Gmail) want a valid DKIM signature over List-Unsubscribe
    and List-Unsubscribe-Post before offering one-click: aliasd signs with the alias
    domain's keys (RSA and ed25519), which `aliasd dns` printed; the bank's own signature
    and the ARC chain, whose AMS covers every DKIM-Signature, keep verifying."""
    w = world
    message = _bank_message().replace(b"stmt-1", b"stmt-oneclick")
    signature = keys.dkim_sign(w.bank, "bank.example", message,
                               ["from", "to", "subject", "date", "message-id"])  # fmt: skip
    result = _send(w, signature + message)
    assert result.returncode == 0, result.stdout + result.stderr
    msg = w.capture.wait_for(lambda m: b"stmt-oneclick" in m.data, timeout=30)
    data = msg.data
    assert msg.header("List-Unsubscribe").startswith(f"<{WEB}/oneclick/")
    assert msg.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert "ra-" in msg.header("Reply-To")  # the reverse alias, added before signing
    dnsfunc = DkimDns(w.settings)
    signatures = _signatures(data, dnsfunc)
    ours = [(tags, ok) for tags, ok in signatures if tags["d"] == "example.net"]
    assert sorted(tags["a"] for tags, _ in ours) == ["ed25519-sha256", "rsa-sha256"]
    published = {line.split("._domainkey")[0] for line in w.zone.splitlines()
                 if "._domainkey.example.net." in line}
    for tags, ok in ours:
        assert ok, tags  # against the records `aliasd dns` printed
        assert tags["s"] in published and tags["c"] == "relaxed/relaxed"
        signed = tags["h"].lower().split(":")
        assert {"from", "to", "subject", "date", "message-id", "reply-to", "list-unsubscribe",
                "list-unsubscribe-post"} <= set(signed), signed
    assert [ok for tags, ok in signatures if tags["d"] == "bank.example"] == [True]
    # ours on top, as RFC 6376 5.6 asks (above the sender's)
    assert [tags["d"] for tags, _ in signatures] == ["example.net", "example.net", "bank.example"]
    cv, _results, reason = dkim.arc_verify(data, dnsfunc=dnsfunc)
    assert cv == b"pass", reason
    ams = email_header(data, "ARC-Message-Signature")
    assert ams.lower().count("dkim-signature") == 3, ams  # RFC 8617 4.1.2

    # the signature can fail: a changed List-Unsubscribe no longer verifies
    tampered = data.replace(b"List-Unsubscribe: <", b"List-Unsubscribe: <x")
    assert not any(ok for tags, ok in _signatures(tampered, dnsfunc) if tags["d"] == "example.net")


def test_rewrite_mode_signatures_and_ours_are_all_covered_by_a_valid_arc_seal(world):
    """Rewrite mode: From: becomes the reverse alias, signed by aliasd (RSA and ed25519);
    aliasd's one-click signatures (the same two keys) go above them. The seal's AMS
    covers all five DKIM-Signatures in the order they arrive in."""
    w = world
    message = _bank_message().replace(b"stmt-1", b"stmt-rewrite").replace(
        ALIAS.encode(), REWRITE_ALIAS.encode())
    signature = keys.dkim_sign(w.bank, "bank.example", message, ["from", "subject"])
    result = _send(w, signature + message, to=REWRITE_ALIAS)
    assert result.returncode == 0, result.stdout + result.stderr
    msg = w.capture.wait_for(lambda m: b"stmt-rewrite" in m.data, timeout=30)
    assert "ra-" in msg.header("From") and msg.header("List-Unsubscribe-Post")
    dnsfunc = DkimDns(w.settings)
    signatures = _signatures(msg.data, dnsfunc)
    ours = [(tags["a"], ok, "list-unsubscribe" in tags["h"].lower())
            for tags, ok in signatures if tags["d"] == "rewrite.example"]
    assert sorted(ours) == [("ed25519-sha256", True, False), ("ed25519-sha256", True, True),
                            ("rsa-sha256", True, False), ("rsa-sha256", True, True)], ours
    cv, _results, reason = dkim.arc_verify(msg.data, dnsfunc=dnsfunc)
    assert cv == b"pass", reason
    assert email_header(msg.data, "ARC-Message-Signature").lower().count("dkim-signature") == 5


def email_header(data: bytes, name: str) -> str:

    return " ".join(email.message_from_bytes(data)[name].split())


def test_with_forward_dkim_sign_off_forwarded_mail_is_not_signed_but_still_sealed(world):
    w = world
    stop_process(w.milter)
    w.milter = start_logged([sys.executable, "-m", "aliasd", "milter"],
                            w.env | {"ALIASD_FORWARD_DKIM_SIGN": "false"}, w.base / "milter2.log")
    try:
        wait_for_milter(w.settings.milter_listen)
        message = _bank_message().replace(b"stmt-1", b"stmt-unsigned")
        signature = keys.dkim_sign(w.bank, "bank.example", message, ["from", "subject"])
        result = _send(w, signature + message)
        assert result.returncode == 0, result.stdout + result.stderr
        msg = w.capture.wait_for(lambda m: b"stmt-unsigned" in m.data, timeout=30)
    finally:
        stop_process(w.milter)
        w.milter = start_logged([sys.executable, "-m", "aliasd", "milter"], w.env,
                                w.base / "milter3.log")  # fmt: skip
        wait_for_milter(w.settings.milter_listen)
    dnsfunc = DkimDns(w.settings)
    assert msg.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert [(tags["d"], ok) for tags, ok in _signatures(msg.data, dnsfunc)] == [
        ("bank.example", True)]
    cv, _results, reason = dkim.arc_verify(msg.data, dnsfunc=dnsfunc)
    assert cv == b"pass", reason


def test_a_forged_signature_and_dns_that_never_answers_still_deliver(world):
    w = world
    message = _bank_message().replace(b"statement-1", b"statement-2")
    signature = keys.dkim_sign(w.bank, "bank.example", message, ["from", "subject"])
    forged = (b"Authentication-Results: " + HOST.encode() + b"; dkim=pass header.d=paypal.example\r\n"
              b"Authentication-Results: mx.elsewhere.example; spf=pass smtp.mailfrom=x@y.example\r\n"
              + signature + message.replace(b"is ready", b"is READY: pay here"))
    w.dns.silent.add("_dmarc.bank.example")
    try:
        result = _send(w, forged.replace(b"stmt-1", b"stmt-forged"))
    finally:
        w.dns.silent.discard("_dmarc.bank.example")
    assert result.returncode == 0, result.stdout
    msg = w.capture.wait_for(lambda m: b"stmt-forged" in m.data, timeout=60)

    results = email.message_from_bytes(msg.data).get_all("Authentication-Results")
    # the sender's claim in our name is gone, another hop's results stay, ours are added
    assert not any("paypal" in r for r in results), results
    assert any(r.startswith("mx.elsewhere.example;") for r in results), results
    assert b"paypal" not in msg.data
    (ar,) = [" ".join(r.split()) for r in results if r.startswith(HOST)]
    assert 'dkim=fail reason="body hash mismatch" header.d=bank.example' in ar, ar
    assert "dmarc=temperror" in ar, ar


def test_doctor_is_content_with_this_setup_and_fails_naming_smtpd_milters_without_it(world):
    w = world
    doctor = [sys.executable, "-m", "aliasd", "doctor", "--postfix-config",
              str(w.postfix.config_dir)]  # fmt: skip
    ok = subprocess.run(doctor, env=w.env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok   smtpd_milters" in ok.stdout and "ok   dns example.net DKIM" in ok.stdout
    assert "ok   milter" in ok.stdout and "ok   lookupd" in ok.stdout
    assert f"ok   host name: {HOST}, from authserv_id" in ok.stdout
    milters = w.postfix.postconf_value("smtpd_milters")
    subprocess.run(["postconf", "-c", str(w.postfix.config_dir), "-X", "smtpd_milters"],
                   check=True)  # fmt: skip
    try:
        bad = subprocess.run(doctor, env=w.env, capture_output=True, text=True, timeout=120)
    finally:
        w.postfix.postconf(smtpd_milters=milters)
    assert bad.returncode == 1, bad.stdout
    line = next(x for x in bad.stdout.splitlines() if x.startswith("fail smtpd_milters"))
    assert "postconf -e 'smtpd_milters = inet:" in line


def test_doctor_fails_naming_the_bounce_class_without_it(world):
    # without it Postfix's bounces skip the milter and name the owner's mailbox
    w = world
    doctor = [sys.executable, "-m", "aliasd", "doctor", "--postfix-config",
              str(w.postfix.config_dir)]  # fmt: skip
    ok = subprocess.run(doctor, env=w.env, capture_output=True, text=True, timeout=120)
    assert "ok   non_smtpd_milters: inet:" in ok.stdout
    assert "ok   internal_mail_filter_classes: bounce" in ok.stdout
    subprocess.run(["postconf", "-c", str(w.postfix.config_dir), "-X",
                    "internal_mail_filter_classes"], check=True)  # fmt: skip
    try:
        bad = subprocess.run(doctor, env=w.env, capture_output=True, text=True, timeout=120)
    finally:
        w.postfix.postconf(internal_mail_filter_classes="bounce")
    assert bad.returncode == 1, bad.stdout
    line = next(x for x in bad.stdout.splitlines()
                if x.startswith("fail internal_mail_filter_classes"))
    assert "postconf -e 'internal_mail_filter_classes = bounce'" in line



def test_doctor_warns_when_blocks_apply_to_attached_and_returned_messages(world):
    # an empty expected value must be empty, not merely "contain nothing"
    w = world
    doctor = [sys.executable, "-m", "aliasd", "doctor", "--postfix-config",
              str(w.postfix.config_dir)]  # fmt: skip
    w.postfix.postconf(nested_header_checks="$header_checks")
    try:
        out = subprocess.run(doctor, env=w.env, capture_output=True, text=True, timeout=120)
    finally:
        w.postfix.postconf(nested_header_checks="")
    line = next(x for x in out.stdout.splitlines() if "nested_header_checks" in x)
    assert line.startswith("warn nested_header_checks: is $header_checks"), line


def _smtp_send(w: World, sender: str, to: str, subject: str, rcpt_options=()) -> None:
    """One message over SMTP with RCPT parameters (swaks has none for DSN)."""
    message = (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject}@store.example>\r\n\r\nAn order for you.\r\n")
    deadline = time.monotonic() + 15
    while True:  # lookupd says TEMP until it has read the domains once
        try:
            with smtplib.SMTP("127.0.0.1", w.postfix.smtp_port, timeout=30) as smtp:
                smtp.sendmail(sender, [to], message, rcpt_options=list(rcpt_options))
            return
        except smtplib.SMTPRecipientsRefused as exc:
            if "451" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _notice_to(w: World, sender: str, subject: str):
    """The delivery status notification Postfix sent back to ``sender`` about ``subject``."""
    return w.capture.wait_for(lambda m: sender in m.rcpt_tos and subject in m.text, timeout=30)


def _report_fields(data: bytes) -> list[str]:
    report = next(p for p in email.message_from_bytes(data).walk()
                  if p.get_content_type() == "message/delivery-status")
    return [f"{k}: {v}" for block in report.get_payload()[1:] for k, v in block.items()]


@pytest.mark.parametrize("orcpt", [None, "rfc822;someone@elsewhere.example"],
                         ids=["plain", "orcpt-given-by-the-sender"])
def test_a_bounce_of_forwarded_mail_names_the_alias_not_the_owners_mailbox(world, orcpt):
    w = world
    subject = f"order-{time.monotonic_ns()}"
    # ORCPT= sets the report's Original-Recipient: the rule must not depend on it alone
    _smtp_send(w, "orders@store.example", FULL_ALIAS, subject,
               [f"ORCPT={orcpt}"] if orcpt else [])
    bounce = _notice_to(w, "orders@store.example", subject)
    assert bounce.mail_from in ("", "<>")
    text = bounce.data.decode("utf-8", "replace")
    assert "full.box" not in text.lower() and "real.example" not in text, text
    # which alias failed, and why
    assert f"<{FULL_ALIAS}>: host 127.0.0.1[127.0.0.1] said: 552 5.2.2" in " ".join(text.split())
    assert f"<{FULL_ALIAS}>: mailbox full" in text
    fields = _report_fields(bounce.data)
    assert f"Final-Recipient: rfc822; {FULL_ALIAS}" in fields, fields
    assert "Action: failed" in fields and "Status: 5.2.2" in fields
    assert subject in text  # the returned message is still there


def test_a_success_notice_for_forwarded_mail_names_the_alias_not_the_owners_mailbox(world):
    w = world
    subject = f"notify-{time.monotonic_ns()}"
    _smtp_send(w, "orders@store.example", ALIAS, subject, ["NOTIFY=SUCCESS"])
    delivered = w.capture.wait_for(lambda m: "alice@real.example" in m.rcpt_tos
                                   and subject in m.text, timeout=30)
    assert delivered.data  # the owner got the message itself, addressed as before
    notice = _notice_to(w, "orders@store.example", subject)
    text = notice.data.decode("utf-8", "replace")
    # Postfix answers NOTIFY=SUCCESS at the alias itself ("expanded") and asks nothing
    # further of the copy it forwards, so no later notice can name the mailbox either
    assert f"<{ALIAS}>: alias expanded" in text
    assert "alice" not in text.lower() and "real.example" not in text, text
    fields = _report_fields(notice.data)
    assert f"Final-Recipient: rfc822; {ALIAS}" in fields and "Action: expanded" in fields
    # the copy went to a server without DSN: had NOTIFY=SUCCESS stayed on it, Postfix
    # would have sent a second, "relayed" notice by now
    time.sleep(3)
    notices = [m for m in w.capture.messages
               if "orders@store.example" in m.rcpt_tos and subject in m.text]
    assert len(notices) == 1


def test_a_bounce_for_mail_not_forwarded_by_aliasd_keeps_its_recipient(world):
    w = world
    subject = f"direct-{time.monotonic_ns()}"
    # relayed from our own network to the full mailbox directly: no alias is involved
    _smtp_send(w, "orders@store.example", FULL_MAILBOX, subject)
    bounce = _notice_to(w, "orders@store.example", subject)
    assert f"Final-Recipient: rfc822; {FULL_MAILBOX}" in _report_fields(bounce.data)


def test_a_dsn_arriving_over_smtp_is_passed_on_as_it_came(world):
    """Only Postfix's own notifications are rewritten: one arriving over SMTP (here as
    the owner's provider would send a late bounce to the SRS sender) could be forged to
    learn whether a guessed address is an alias's mailbox."""
    w = world
    subject = f"late-{time.monotonic_ns()}"
    _smtp_send(w, "orders@store.example", ALIAS, f"first-{subject}")
    srs = w.capture.wait_for(lambda m: f"first-{subject}" in m.text, timeout=30).mail_from
    assert srs.startswith("SRS0=") and "=store.example=orders@" in srs
    dsn = (
        f"From: MAILER-DAEMON@mx.real.example\r\nTo: {srs}\r\nSubject: failure: {subject}\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\n"
        f"<{FULL_MAILBOX}> (expanded from <{FULL_ALIAS}>): quota exceeded.\r\n"
        "--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.real.example\r\n\r\n"
        f"Final-Recipient: rfc822; {FULL_MAILBOX}\r\nOriginal-Recipient: rfc822;{FULL_ALIAS}\r\n"
        "Action: failed\r\nStatus: 5.2.2\r\n\r\n"
        "--b1\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"X-Aliasd-Alias: {FULL_ALIAS} (site shop.example)\r\nTo: {FULL_ALIAS}\r\n"
        f"Subject: {subject}\r\n\r\n--b1--\r\n"
    )
    deadline = time.monotonic() + 15
    while True:  # lookupd says TEMP until it has read the domains once
        try:
            with smtplib.SMTP("127.0.0.1", w.postfix.smtp_port, timeout=30) as smtp:
                smtp.sendmail("", [srs], dsn)
            break
        except smtplib.SMTPRecipientsRefused as exc:
            if "451" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    bounce = _notice_to(w, "orders@store.example", subject)
    assert f"Final-Recipient: rfc822; {FULL_MAILBOX}" in _report_fields(bounce.data)
    assert f"<{FULL_MAILBOX}> (expanded from <{FULL_ALIAS}>)" in bounce.text


def test_mail_submitted_with_sendmail_to_no_alias_passes_the_milter_untouched(world):
    # non_smtpd_milters shows the milter every locally submitted message too
    w = world
    subject = f"cron-{time.monotonic_ns()}"
    message = (f"From: root@mx.aliasd.test\nTo: ops@elsewhere.example\nSubject: {subject}\n\n"
               "Nightly job done: alice@real.example\n")
    sent = subprocess.run(["sendmail", "-i", "-f", "root@mx.aliasd.test", "ops@elsewhere.example"],
                          input=message, text=True, capture_output=True, timeout=60,
                          env={**os.environ, "MAIL_CONFIG": str(w.postfix.config_dir)})
    assert sent.returncode == 0, sent.stderr
    msg = w.capture.wait_for(lambda m: subject in m.text, timeout=30)
    assert msg.rcpt_tos == ["ops@elsewhere.example"]
    assert "Nightly job done: alice@real.example" in msg.text
    assert not [h for h in email.message_from_bytes(msg.data)
                if h.lower().startswith(("x-aliasd", "x-spam", "arc-", "authentication-results"))]


def test_mail_submitted_with_sendmail_to_an_alias_is_forwarded_as_before_unscanned(world):
    """The milter sees locally submitted mail only because of Postfix's bounces: mail of
    the sendmail command (and a released message pickup requeues) is not scanned,
    recorded or held again; it is forwarded as it was before the milter saw it."""
    w = world
    subject = f"local-{time.monotonic_ns()}"
    message = f"From: root@mx.aliasd.test\nTo: {ALIAS}\nSubject: {subject}\n\nBackup done.\n"
    sent = subprocess.run(["sendmail", "-i", "-f", "root@mx.aliasd.test", ALIAS],
                          input=message, text=True, capture_output=True, timeout=60,
                          env={**os.environ, "MAIL_CONFIG": str(w.postfix.config_dir)})
    assert sent.returncode == 0, sent.stderr
    msg = w.capture.wait_for(lambda m: subject in m.text, timeout=30)
    assert msg.rcpt_tos == ["alice@real.example"]
    assert not [h for h in email.message_from_bytes(msg.data)
                if h.lower().startswith(("x-aliasd", "x-spam", "arc-", "authentication-results"))]
    time.sleep(1.0)  # the event writer would have written it by now
    with w.database.session() as s:
        assert s.scalars(select(MailEvent).where(MailEvent.subject == subject)).all() == []


def test_a_block_matching_only_the_returned_message_does_not_hold_the_bounce_back(world):
    """internal_mail_filter_classes = bounce runs header_checks on Postfix's bounces too;
    with nested_header_checks left at $header_checks a rule matching the returned
    message (e.g. its From:, for a sender blocked since) made cleanup refuse the bounce
    and kept the original queued, "bounce failed", retried for ever (seen here)."""
    w = world
    blocklist = Path(w.settings.effective_blocklist_file)
    kept = blocklist.read_text()
    # Return-Path: is only in the returned message, so the original itself passes
    blocklist.write_text(kept + "/^Return-Path:.*=probe-hc@/ REJECT blocked\n")
    w.postfix.reload()
    try:
        _smtp_send(w, "probe-hc@store.example", FULL_ALIAS, "probe-hc-subject")
        bounce = _notice_to(w, "probe-hc@store.example", "probe-hc-subject")
    finally:
        blocklist.write_text(kept)
        w.postfix.reload()
    assert f"Final-Recipient: rfc822; {FULL_ALIAS}" in _report_fields(bounce.data)

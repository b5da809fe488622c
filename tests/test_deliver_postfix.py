"""Forwarding that arrives, through a real Postfix wired only with ``aliasd postfix-config``'s
lines, real ``aliasd lookupd`` and ``aliasd milter``, the tests' own DNS server serving
what ``aliasd dns`` printed, and a capture SMTP server standing in for the owner's
mailbox provider. No SRS or DKIM settings: the defaults must do it."""

from __future__ import annotations

import os
import re
import shutil
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
from tests.harness.net import free_port, wait_for_port
from tests.harness.postfix import CaptureServer, PostfixInstance, smtp_reply_codes, swaks
from tests.harness.processes import start_logged, stop_process

pytestmark = pytest.mark.postfix

HOST = "mx.example.net"
ALIAS = "github.com@example.net"


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
    settings = load_settings(
        environ={}, data_dir=str(data_dir), database_url=database.url, env="development",
        secret_key="test", dns_resolver=dns_server.address, authserv_id=HOST,
        lookup_socketmap=f"127.0.0.1:{free_port()}", lookup_tcp="",
        milter_listen=f"127.0.0.1:{free_port()}", blocklist_reload_command="true",
    )  # fmt: skip
    env = settings_env(settings) | {
        "ALIASD_AUTHSERV_ID": HOST,
        "ALIASD_LOOKUP_SOCKETMAP": settings.lookup_socketmap,
        "ALIASD_LOOKUP_TCP": "",
        "ALIASD_MILTER_LISTEN": settings.milter_listen,
    }
    upgrade = subprocess.run([sys.executable, "-m", "aliasd", "db", "upgrade"], env=env,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    # What the admin publishes: aliasd dns's lines, plus the host's own A record.
    zone = subprocess.run([sys.executable, "-m", "aliasd", "dns", "example.net"], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert zone.returncode == 0, zone.stderr
    dns_server.add_zone_lines(zone.stdout)
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
    w.database, w.zone, w.base = database, zone.stdout, base
    try:
        for listen in (settings.lookup_socketmap, settings.milter_listen):
            wait_for_port(int(listen.rsplit(":", 1)[1]), timeout=30)
        postfix.start()
        yield w
    finally:
        postfix.stop()
        capture.stop()
        for proc in (milter, lookupd):
            stop_process(proc)
        dns_server.stop()
        database.dispose()
        shutil.rmtree(root, ignore_errors=True)


def _send(w: World, data: bytes) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + 15
    while True:  # lookupd says TEMP until it has read the domains once
        result = swaks(w.postfix.smtp_port, to=ALIAS, sender="alerts@bank.example",
                       data=data.decode().replace("\r\n", "\n"))  # fmt: skip
        if "451" not in smtp_reply_codes(result.stdout) or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


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
    # the original signature survives forwarding: aliasd changed headers only
    assert dkim.verify(data, dnsfunc=dnsfunc)
    # the ARC set verifies with the key `aliasd dns` printed (served by our DNS)
    cv, _results, reason = dkim.arc_verify(data, dnsfunc=dnsfunc)
    assert cv == b"pass", reason
    seal = re.search(rb"^ARC-Seal: (.*?)\r\n(?!\s)", data, re.M | re.S).group(1)
    tags = dict(t.strip().split(b"=", 1) for t in seal.split(b";") if b"=" in t)
    assert (tags[b"i"], tags[b"cv"], tags[b"d"]) == (b"1", b"none", b"example.net")
    ar = msg.header("Authentication-Results")
    assert ar and ar.startswith(HOST + ";"), ar
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
    assert event.auth == "spf=pass dkim=pass dmarc=pass (p=reject) arc=none"


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
    import email

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

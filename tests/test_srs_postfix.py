"""SRS through a real Postfix: the main.cf lines ``aliasd postfix-config`` prints, a real
``aliasd lookupd`` serving the maps, and a capture SMTP server standing in for the owner's
mailbox provider and for the original senders' MX hosts."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.core.srs import SrsConfig, SrsRewriter
from aliasd.postfix.config_lines import lookup_section, srs_section
from tests.harness.cli import settings_env
from tests.harness.databases import sqlite_database
from tests.harness.net import free_port, wait_for_port
from tests.harness.postfix import CaptureServer, PostfixInstance, smtp_reply_codes, swaks

pytestmark = pytest.mark.postfix

SRS_DOMAIN = "fwd.example.net"  # deliberately not one of the alias domains
SECRETS = ["current-secret", "previous-secret"]
SRS0 = re.compile(
    r"^SRS0=[^=]{6}=[A-Z2-7]{2}=(?P<domain>[^=]+)=(?P<local>[^@]+)@fwd\.example\.net$"
)
DAY = 86400.0
NULL_SENDER = ("", "<>")  # as aiosmtpd reports MAIL FROM:<>


def main_cf_lines(settings) -> dict[str, str]:
    """main.cf settings from the sections ``aliasd postfix-config`` prints."""
    values: dict[str, str] = {}
    for section in (lookup_section(settings), srs_section(settings)):
        assert section is not None
        for line in section.lines:
            if line.startswith("#"):
                continue
            key, _, value = line.partition(" = ")
            values[key] = value
    return values


@pytest.fixture(scope="module")
def mail(tmp_path_factory):
    base = tmp_path_factory.mktemp("srs")
    database = sqlite_database(str(base / "aliasd.db"))
    with database.session() as session:
        owner = core.create_user(session, "alice", "alice@real.example")
        core.create_domain(session, "example.net", owner)
        core.create_alias(session, "github.com@example.net", owner)
        core.create_alias(
            session, "shop.example@example.net", owner, destinations=["full@real.example"]
        )
    port = free_port()
    settings = load_settings(
        environ={},
        data_dir=str(base / "data"),
        database_url=database.url,
        env="development",
        secret_key="test-secret",
        lookup_socketmap=f"127.0.0.1:{port}",
        lookup_tcp="",
        srs_domain=SRS_DOMAIN,
        srs_secrets=SECRETS,
        srs_hash_length=6,
    )
    env = settings_env(settings) | {
        "ALIASD_SRS_DOMAIN": SRS_DOMAIN,
        "ALIASD_SRS_SECRETS": ",".join(SECRETS),
        "ALIASD_SRS_HASH_LENGTH": "6",
    }
    lookupd = subprocess.Popen(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{port}",
         "--tcp", ""],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    capture = CaptureServer()
    capture.start()
    # The owner's second mailbox refuses everything, so Postfix must bounce.
    capture.reject_rcpt = lambda addr: "550 5.2.2 mailbox full" if addr == "full@real.example" else None
    pf = PostfixInstance(base / "postfix", relay_port=capture.port, main_cf=main_cf_lines(settings))
    try:
        wait_for_port(port, timeout=20)
        pf.start()
        yield pf, capture, SrsRewriter(SrsConfig.from_settings(settings))
    finally:
        pf.stop()
        capture.stop()
        lookupd.terminate()
        try:
            lookupd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            lookupd.kill()
            lookupd.wait()
        database.dispose()


def send(pf: PostfixInstance, **kw) -> subprocess.CompletedProcess:
    # lookupd loads the managed domains in the background just after start-up and says
    # TEMP until then (451): retry briefly, as a real sender would later.
    deadline = time.monotonic() + 15
    while True:
        result = swaks(pf.smtp_port, **kw)
        if "451" not in smtp_reply_codes(result.stdout) or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_forwarded_mail_leaves_with_an_srs_sender(mail):
    pf, capture, rewriter = mail
    result = send(pf, sender="news@shop.example", to="GitHub.com+promo@example.net")
    assert result.returncode == 0, result.stdout + result.stderr
    msg = capture.wait_for(lambda m: "=shop.example=news@" in m.mail_from)
    assert msg.rcpt_tos == ["alice@real.example"]
    match = SRS0.match(msg.mail_from)
    assert match and match["domain"] == "shop.example" and match["local"] == "news", msg.mail_from
    assert rewriter.reverse(msg.mail_from) == "news@shop.example"


def test_senders_of_our_own_domains_are_not_rewritten(mail):
    pf, capture, _ = mail
    result = send(pf, sender="github.com@example.net", to="github.com@example.net")
    assert result.returncode == 0, result.stdout + result.stderr
    msg = capture.wait_for(lambda m: "github.com@example.net" in m.mail_from)
    assert msg.mail_from == "github.com@example.net"


def test_bounce_to_srs_address_goes_back_to_the_original_sender(mail):
    pf, capture, rewriter = mail
    srs = rewriter.forward("billing@bank.example")
    result = send(pf, sender="<>", to=srs, header={"Subject": "Undelivered Mail"})
    assert result.returncode == 0, result.stdout + result.stderr
    msg = capture.wait_for(lambda m: "billing@bank.example" in m.rcpt_tos)
    assert msg.rcpt_tos == ["billing@bank.example"] and msg.mail_from in NULL_SENDER
    # An address signed with the previous secret (before a rotation) still works.
    old = SrsRewriter(SrsConfig.build(domain=SRS_DOMAIN, secrets=SECRETS[1:], hash_length=6))
    result = send(pf, sender="<>", to=old.forward("rotated@bank.example"))
    assert result.returncode == 0, result.stdout + result.stderr
    msg = capture.wait_for(lambda m: "rotated@bank.example" in m.rcpt_tos)
    assert msg.mail_from in NULL_SENDER


def test_postfix_bounce_of_forwarded_mail_reaches_the_original_sender(mail):
    pf, capture, _ = mail
    result = send(pf, sender="orders@store.example", to="shop.example@example.net")
    assert result.returncode == 0, result.stdout + result.stderr
    # The owner's mailbox refused the forwarded copy; Postfix's bounce went to the SRS
    # sender, came back through our own cleanup and was reversed.
    bounce = capture.wait_for(lambda m: "orders@store.example" in m.rcpt_tos, timeout=30)
    assert bounce.mail_from in NULL_SENDER and bounce.rcpt_tos == ["orders@store.example"]
    assert "mailbox full" in bounce.text


def test_forged_tampered_and_expired_srs_addresses_are_refused_at_rcpt(mail):
    pf, capture, rewriter = mail
    valid = rewriter.forward("victim@bank.example")
    then = SrsRewriter(rewriter.config, clock=lambda: time.time() - 30 * DAY)
    refused = {
        "tampered": valid.replace("=victim@", "=mallory@"),
        "forged": "SRS0=AAAAAA=AB=bank.example=mallory@fwd.example.net",
        "expired": then.forward("mallory@bank.example"),
        "not srs": "postmaster-ish@fwd.example.net",
    }
    for what, address in refused.items():
        result = send(pf, sender="<>", to=address)
        codes = smtp_reply_codes(result.stdout)
        assert result.returncode != 0 and "550" in codes, (what, result.stdout)
        assert "User unknown" in result.stdout, (what, result.stdout)
    assert not [m for m in capture.messages if any("mallory" in r for r in m.rcpt_tos)]

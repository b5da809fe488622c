"""End to end through a real Postfix: learning from the mailbox (spam@ / ham@ of a
managed domain) and the daily digest. One Postfix and one milter per engine."""

from __future__ import annotations

import base64
import subprocess
import time

import pytest
from sqlalchemy import select

from aliasd.models import MessageSample
from tests.harness.cli import run_cli_in_process
from tests.harness.dns import DnsServer
from tests.harness.postfix import swaks
from tests.harness.quarantine_world import (
    ALIAS,
    MAILBOX,
    forward_as_attachment,
    learned_ham,
    learned_spam,
    running_world,
    send_suspicious,
    smtp,
    wait,
)
from tests.harness.webapp import page_token, signed_in

pytestmark = pytest.mark.postfix


MAILBOX_SERVER = "192.0.2.10"  # where alice's mail provider sends from (its SPF says so)


@pytest.fixture(scope="module")
def dns_server():
    server = DnsServer().start()
    server.add("mailbox.example", "TXT", f"v=spf1 ip4:{MAILBOX_SERVER} -all")
    yield server
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory, dns_server):
    with running_world(request, tmp_path_factory, request.param,
                       dns_resolver=dns_server.address) as w:
        yield w


@pytest.fixture(scope="module")
def dkim_keys(tmp_path_factory, dns_server):
    """A DKIM key of alice's mail provider and one of a stranger's own domain, both
    published in the tests' DNS; each signs mail of its domain."""
    base = tmp_path_factory.mktemp("learn-dkim")
    keys = {}
    for domain in ("mailbox.example", "evil.example"):
        private = base / f"{domain}.pem"
        subprocess.run(["openssl", "genrsa", "-out", str(private), "2048"], check=True,
                       capture_output=True)
        der = subprocess.run(["openssl", "rsa", "-in", str(private), "-pubout", "-outform",
                              "DER"], check=True, capture_output=True).stdout
        dns_server.add(f"sel._domainkey.{domain}", "TXT",
                       "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode())
        keys[domain] = private.read_bytes()
    return keys


def _dkim_signed(key: bytes, domain: str, raw: bytes) -> bytes:
    import dkim

    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return dkim.sign(raw, b"sel", domain.encode(), key,
                     include_headers=[b"from", b"to", b"subject"]) + raw


def test_owner_forwarding_a_missed_spam_to_spam_at_domain_teaches_the_filter(world):
    marker = f"fwd{time.monotonic_ns()}"
    inner = (f"From: winner@lottery.example\nTo: {ALIAS}\nSubject: You won {marker}\n"
             f"Message-ID: <{marker}@lottery.example>\n\n"
             "Claim your prize of one million dollars now, send your bank details.\n").encode()
    before = learned_spam(world)
    code, text = smtp(world, MAILBOX, "spam@example.net",
                       forward_as_attachment(MAILBOX, "spam@example.net", inner))
    assert code == 250, text
    assert learned_spam(world) == before + 1
    time.sleep(0.5)
    assert not [m for m in world.capture.messages if marker in m.text]  # consumed, not sent on


def test_spam_at_domain_refuses_strangers_and_explains_a_missing_attachment(world):
    inner = b"From: a@b.example\nSubject: x\n\nsome spam text here\n"
    before = learned_spam(world)
    code, text = smtp(world, "mallory@evil.example", "spam@example.net",
                       forward_as_attachment("mallory@evil.example", "spam@example.net", inner))
    assert code == 550 and "Only the owner of example.net may write" in text
    code, text = smtp(world, MAILBOX, "ham@example.net",
                       forward_as_attachment(MAILBOX, "ham@example.net", None))
    assert code == 550 and "no message attached" in text
    broken = forward_as_attachment(MAILBOX, "spam@example.net", b"").replace(
        b"Content-Disposition", b"X-Nothing")
    code, text = smtp(world, MAILBOX, "spam@example.net", broken)
    assert code == 550 and "empty or broken" in text, text
    assert learned_spam(world) == before


def test_a_strangers_own_dkim_signature_does_not_let_them_teach_the_owners_filter(
        world, dkim_keys):
    # Mallory writes from her own server, with alice's mailbox as envelope sender and her
    # own address in From:, signed by her own domain: the signature proves only that
    # evil.example sent it, not that alice did.
    inner = (b"From: friend@garden.example\nTo: someone@example.net\nSubject: Club news\n\n"
             b"Our gardening club meets on Tuesday, bring your seedlings.\n")
    before = learned_spam(world)
    forged = _dkim_signed(dkim_keys["evil.example"], "evil.example", forward_as_attachment(
        "mallory@evil.example", "spam@example.net", inner))
    code, text = smtp(world, MAILBOX, "spam@example.net", forged, client_addr="203.0.113.9")
    assert code == 550 and "spam@ and ham@" in text, text
    assert learned_spam(world) == before
    # alice's own provider signing her mail (From: her mailbox) is proof enough
    marker = f"own{time.monotonic_ns()}"
    inner = (f"From: winner@lottery.example\nTo: {ALIAS}\nSubject: You won {marker}\n\n"
             "Claim your prize of one million dollars now.\n").encode()
    signed = _dkim_signed(dkim_keys["mailbox.example"], "mailbox.example",
                          forward_as_attachment(MAILBOX, "spam@example.net", inner))
    code, text = smtp(world, MAILBOX, "spam@example.net", signed, client_addr="203.0.113.9")
    assert code == 250, text
    assert learned_spam(world) == before + 1


def test_a_bounced_spam_teaches_the_filter_only_when_the_owners_own_server_bounced_it(
        world, dkim_keys):
    # A bounced (redirected) message keeps its author's From: and DKIM signature; the
    # one who bounced it is Resent-From:. The spammer's signature still verifies, and
    # proves nothing about who bounced it.
    def bounced(marker: str) -> bytes:
        spam = (f"From: offers@evil.example\nTo: {ALIAS}\nSubject: Cheap pills {marker}\n"
                f"Message-ID: <{marker}@evil.example>\n\n"
                "Cheap pills without prescription, order today.\n").encode()
        return (f"Resent-From: {MAILBOX}\r\nResent-To: spam@example.net\r\n"
                "Resent-Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n").encode() + _dkim_signed(
                    dkim_keys["evil.example"], "evil.example", spam)

    before = learned_spam(world)
    code, text = smtp(world, MAILBOX, "spam@example.net", bounced(f"x{time.monotonic_ns()}"),
                      client_addr="203.0.113.9")
    assert code == 550 and "spam@ and ham@" in text, text
    assert learned_spam(world) == before
    # bounced by alice's own provider (its SPF names the client)
    code, text = smtp(world, MAILBOX, "spam@example.net", bounced(f"y{time.monotonic_ns()}"),
                      client_addr=MAILBOX_SERVER)
    assert code == 250, text
    assert learned_spam(world) == before + 1


def _attached_as_is(sender: str, to: str, inner: bytes) -> bytes:
    """A forward as attachment the way Thunderbird and Outlook send one: the message's
    bytes untouched in a message/rfc822 part."""
    inner = inner.replace(b"\r\n", b"\n")
    return (f"From: {sender}\nTo: {to}\nSubject: Fwd: spam\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\n"
            "Content-Type: text/plain\n\nThis one got through.\n--b1\n"
            "Content-Type: message/rfc822\nContent-Disposition: attachment\n\n"
            ).encode() + inner + b"\n--b1--\n"


def test_a_spam_taught_on_the_web_and_again_from_the_mailbox_counts_once(world):
    marker = f"twice{time.monotonic_ns()}"
    proc = swaks(world.postfix.smtp_port, to=ALIAS, sender="news@shop.example",
                 header={"From": "news@shop.example", "Subject": f"Deal {marker}"},
                 body="Buy our cheap replica handbags today, limited offer.")
    assert proc.returncode == 0, proc.stdout
    delivered = world.capture.wait_for(lambda m: marker in m.text)  # as the owner got it

    def kept():
        with world.db.session() as s:
            return s.execute(select(MessageSample.id, MessageSample.alias_id).where(
                MessageSample.subject == f"Deal {marker}")).first()
    sample_id, alias_id = wait(kept)
    alice = signed_in(world.app, "alice")
    token = page_token(alice, f"/aliases/{alias_id}")
    before = learned_spam(world)
    page = alice.post(f"/learn/{sample_id}", data={"verdict": "spam", "csrf_token": token},
                      follow_redirects=True)
    assert "learned this message as spam" in page.get_data(as_text=True)
    assert learned_spam(world) == before + 1
    # later alice forwards the copy in her mailbox (with the headers forwarding added:
    # one-click List-Unsubscribe, the reverse alias's Reply-To, signatures) to spam@
    code, text = smtp(world, MAILBOX, "spam@example.net",
                      _attached_as_is(MAILBOX, "spam@example.net", delivered.data))
    assert code == 250, text
    assert learned_spam(world) == before + 1  # the same message: not counted again
    # and teaching it as not spam moves it rather than counting it in both classes
    ham_before = learned_ham(world)
    code, text = smtp(world, MAILBOX, "ham@example.net",
                      _attached_as_is(MAILBOX, "ham@example.net", delivered.data))
    assert code == 250, text
    assert (learned_spam(world), learned_ham(world)) == (before, ham_before + 1)


def test_daily_digest_mails_the_owner_what_is_held(world):
    marker = f"digest{time.monotonic_ns()}"
    assert send_suspicious(world, marker).returncode == 0
    wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    off = world.cli("quarantine", "digest")
    assert off.returncode == 0 and "quarantine_digest is off: nothing sent" in off.stdout
    env = dict(world.env, ALIASD_QUARANTINE_DIGEST="1", ALIASD_SENDMAIL_COMMAND=",".join(
        ["sendmail", "-C", str(world.postfix.config_dir), "-t", "-i"]))
    proc = run_cli_in_process(env, ("quarantine", "digest", "--hours", "1"))
    assert proc.returncode == 0, proc.stderr
    assert f"digest sent to {MAILBOX}" in proc.stdout
    digest = world.capture.wait_for(lambda m: "held for review" in (m.header("Subject") or "")
                                    and marker.upper() in m.text)
    assert digest.rcpt_tos == [MAILBOX] and digest.header("Auto-Submitted") == "auto-generated"
    assert f"{ALIAS}" in digest.text and f"{world.base_url}/quarantine/" in digest.text
    again = run_cli_in_process(env, ("quarantine", "digest"))  # listed once, not every day
    assert again.returncode == 0 and "nothing held: no digest sent" in again.stdout


def test_the_digest_comes_from_this_mail_server_not_from_the_owners_mail_provider(
        world, dns_server):
    # alice's provider publishes DMARC p=reject: mail claiming its domain that its own
    # servers did not send (nor sign) is refused there. The digest must not claim it.
    from aliasd.core.addresses import domain_of
    from aliasd.core.reply_headers import first_address
    from aliasd.mailauth.verify import authenticate

    marker = f"digestfrom{time.monotonic_ns()}"
    assert send_suspicious(world, marker).returncode == 0
    wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    host = subprocess.run(  # this host's name, as Postfix's own mail names it
        ["postconf", "-c", str(world.postfix.config_dir), "-h", "myhostname"],
        capture_output=True, text=True, check=True).stdout.strip()
    env = dict(world.env, ALIASD_QUARANTINE_DIGEST="1", ALIASD_AUTHSERV_ID=host,
               ALIASD_SENDMAIL_COMMAND=",".join(
                   ["sendmail", "-C", str(world.postfix.config_dir), "-t", "-i"]))
    proc = run_cli_in_process(env, ("quarantine", "digest", "--hours", "1"))
    assert proc.returncode == 0, proc.stderr
    digest = world.capture.wait_for(lambda m: "held for review" in (m.header("Subject") or "")
                                    and marker.upper() in m.text)
    author = first_address(digest.header("From"))[1]
    assert domain_of(author) == host and digest.mail_from.endswith("@" + host)
    dns_server.add("_dmarc.mailbox.example", "TXT", "v=DMARC1; p=reject")
    try:
        seen = authenticate(world.settings, message=digest.data, sender=digest.mail_from,
                            client_addr="127.0.0.1", helo="localhost",
                            from_header=digest.header("From").encode())
    finally:
        dns_server.remove("_dmarc.mailbox.example")
    assert seen.dmarc.result != "fail", seen.dmarc

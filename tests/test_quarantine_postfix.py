"""End to end through a real Postfix: a message scoring between the quarantine and
reject thresholds is accepted, held in Postfix's hold queue (not forwarded), listed
by ``aliasd quarantine list``, and released (learning it as ham) or deleted; the
one-click headers ride along on forwarded mail. One Postfix and one milter per engine."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select
from werkzeug.serving import make_server

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.models import Alias, MessageSample, User
from tests.harness.cli import run_cli_in_process, settings_env
from tests.harness.databases import open_clean_database
from tests.harness.net import free_port, wait_for_port
from tests.harness.postfix import CaptureServer, PostfixInstance, swaks
from tests.harness.processes import start_logged, stop_process
from tests.harness.webapp import PASSWORD, add_user, make_app
from tests.test_web_browser import ARTIFACTS, CHROMIUM_ARGS

pytestmark = pytest.mark.postfix

ALIAS = "github.com@example.net"
MAILBOX = "alice@mailbox.example"  # tests.harness.webapp.add_user's


class World:
    def __init__(self, db, settings, env, postfix, capture):
        self.db, self.settings, self.env = db, settings, env
        self.postfix, self.capture = postfix, capture

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli_in_process(self.env, args)

    def held(self) -> list[dict]:
        proc = self.cli("quarantine", "list", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def postfix_hold_queue(self) -> list[str]:
        proc = subprocess.run(["postqueue", "-c", str(self.postfix.config_dir), "-j"],
                              capture_output=True, text=True, check=True)
        return [e["queue_id"] for e in map(json.loads, proc.stdout.splitlines())
                if e["queue_name"] == "hold"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"quarantine-{request.param}")
    db = open_clean_database(request.param, base, request)
    alice = add_user(db, "alice", domain="example.net")
    add_user(db, "bob", domain="bob.example")
    with db.session() as s:
        core.create_alias(s, ALIAS, s.get(User, alice), site="github.com")
        core.create_alias(s, "shop.example@example.net", s.get(User, alice), site="shop.example")
    web_port = free_port()
    base_url = f"http://127.0.0.1:{web_port}"
    pf_dir = Path(tempfile.mkdtemp(prefix="aliasd-quarantine-pf-", dir="/tmp"))
    os.chmod(pf_dir, 0o755)
    capture = CaptureServer()
    capture.start()
    settings = load_settings(
        environ={}, data_dir=str(base / "data"), database_url=db.url, env="development",
        secret_key="test-secret", milter_listen=f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    lookup_port = free_port()
    from aliasd.postfix.config_lines import postfix_table
    from aliasd.postfix.milter_lines import postfix_milter_settings

    table = postfix_table("socketmap", f"127.0.0.1:{lookup_port}", "virtual")
    postfix = PostfixInstance(pf_dir / "pf", relay_port=capture.port, main_cf={
        "virtual_alias_domains": table, "virtual_alias_maps": table,
        "recipient_delimiter": "+", **postfix_milter_settings(settings)})
    env = settings_env(settings)
    env.update(
        ALIASD_MILTER_LISTEN=settings.milter_listen,
        ALIASD_BLOCKLIST_RELOAD_COMMAND="true",
        ALIASD_QUARANTINE_SCORE="5",
        ALIASD_POSTFIX_CONFIG_DIR=str(postfix.config_dir),
        ALIASD_WEB_BASE_URL=base_url,
        ALIASD_QUARANTINE_RELEASE_MODE="direct",  # the tests run as root, as postsuper wants
    )
    milter = start_logged([sys.executable, "-m", "aliasd", "milter"], env, base / "milter.log")
    lookupd = start_logged(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{lookup_port}",
         "--tcp", ""], env, base / "lookupd.log")  # fmt: skip
    wait_for_port(lookup_port)
    wait_for_port(int(settings.milter_listen.rsplit(":", 1)[1]))
    postfix.start()
    world = World(db, load_settings(environ=env), env, postfix, capture)
    # The web app on the port the one-click links name, driving the same Postfix.
    world.base_url = base_url
    world.app = make_app(world.settings)
    server = make_server("127.0.0.1", web_port, world.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield world
    server.shutdown()
    for proc in (milter, lookupd):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    postfix.stop()
    capture.stop()
    for proc in (milter, lookupd):
        stop_process(proc)
    shutil.rmtree(pf_dir, ignore_errors=True)
    db.dispose()


def _send_suspicious(world: World, marker: str) -> subprocess.CompletedProcess:
    # Capitals in the subject, undisclosed recipients, X-Priority 1, a sender unrelated
    # to the alias's site: about 8 points, between quarantine (5) and reject (15).
    return swaks(
        world.postfix.smtp_port, to=ALIAS, sender="offers@deals.example",
        header={"From": "offers@deals.example", "To": "undisclosed-recipients:;",
                "Subject": f"CHEAP WATCHES TODAY {marker.upper()}", "X-Priority": "1"},
        body=f"Original body line {marker}\nBest regards.",
    )  # fmt: skip


def _wait(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.1)


def _learned_ham(world: World) -> int:
    proc = world.cli("stat")
    assert proc.returncode == 0, proc.stderr
    return int(re.search(r"BAYES_HAM type: \w+; learned: (\d+)", proc.stdout).group(1))


def test_suspicious_message_is_held_listed_and_released_as_ham(world):
    marker = f"held{time.monotonic_ns()}"
    proc = _send_suspicious(world, marker)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # 250: accepted from the sender
    [row] = _wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    assert row["alias"] == ALIAS and row["sender"] == "offers@deals.example"
    assert 5 <= row["score"] < 15 and "SUBJ_ALL_CAPS" in row["symbols"]
    assert row["queue_id"] in _wait(world.postfix_hold_queue)
    time.sleep(1.0)  # would it be forwarded? it must not
    assert not [m for m in world.capture.messages if marker in m.text]

    before = _learned_ham(world)
    proc = world.cli("quarantine", "release", str(row["id"]), "--learn-ham")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "released (learning: learned)" in proc.stdout
    msg = world.capture.wait_for(lambda m: marker in m.text)
    assert msg.rcpt_tos == [MAILBOX]
    assert f"Original body line {marker}\r\nBest regards." in msg.text
    assert msg.header("Subject") == f"CHEAP WATCHES TODAY {marker.upper()}"  # not rewritten
    assert msg.header("X-Aliasd-Alias") == f"{ALIAS} (site github.com)"
    assert _learned_ham(world) == before + 1
    assert row["queue_id"] not in world.postfix_hold_queue()

    again = world.cli("quarantine", "release", str(row["id"]))
    assert again.returncode == 1
    assert f"quarantined message {row['id']} was already released" in again.stderr


def test_held_message_deleted_with_learn_spam_is_gone_from_postfix(world):
    marker = f"del{time.monotonic_ns()}"
    assert _send_suspicious(world, marker).returncode == 0
    [row] = _wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    _wait(lambda: row["queue_id"] in world.postfix_hold_queue())
    proc = world.cli("quarantine", "delete", str(row["id"]), "--learn-spam")
    assert proc.returncode == 0, proc.stderr
    assert "deleted (learning: learned)" in proc.stdout
    assert row["queue_id"] not in world.postfix_hold_queue()
    assert not [r for r in world.held() if r["id"] == row["id"]]
    again = world.cli("quarantine", "release", str(row["id"]))
    assert again.returncode == 1 and "was already deleted" in again.stderr


def test_releasing_a_message_postfix_no_longer_holds_says_so(world):
    marker = f"gone{time.monotonic_ns()}"
    assert _send_suspicious(world, marker).returncode == 0
    [row] = _wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    _wait(lambda: row["queue_id"] in world.postfix_hold_queue())
    subprocess.run(["postsuper", "-c", str(world.postfix.config_dir), "-d", row["queue_id"]],
                   capture_output=True, check=True)
    proc = world.cli("quarantine", "release", str(row["id"]))
    assert proc.returncode == 1
    assert "no longer in Postfix's hold queue; nothing was delivered" in proc.stderr
    listed = json.loads(world.cli("quarantine", "list", "--all", "--json").stdout)
    assert [r["state"] for r in listed if r["id"] == row["id"]] == ["purged"]


def test_clean_message_is_forwarded_with_one_click_headers(world):
    marker = f"clean{time.monotonic_ns()}"
    proc = swaks(world.postfix.smtp_port, to=ALIAS, sender="noreply@github.com",
                 header={"From": "GitHub <noreply@github.com>", "Subject": f"Merged {marker}"},
                 body="Your pull request was merged.")
    assert proc.returncode == 0, proc.stdout
    msg = world.capture.wait_for(lambda m: marker in m.text)
    disable = msg.header("X-Aliasd-Disable")
    assert disable.startswith(f"<{world.base_url}/oneclick/")
    assert msg.header("List-Unsubscribe") == disable
    assert msg.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert msg.header("X-Aliasd-Block-Sender").startswith(f"<{world.base_url}/oneclick/")

    def kept():  # the learning copy, written off the SMTP answer's path
        with world.db.session() as s:
            return s.scalar(select(MessageSample).where(
                MessageSample.subject == f"Merged {marker}"))
    sample = _wait(kept)
    assert sample.alias_address == ALIAS and b"Your pull request was merged." in sample.raw
    assert b"X-Aliasd-Disable" not in sample.raw  # what the sender sent, not what we added


def _alias_state(world: World, address: str = ALIAS) -> str:
    with world.db.session() as s:
        return s.scalar(select(Alias.state).where(Alias.address == address))


def test_one_click_link_disables_the_alias_and_a_tampered_one_does_nothing(world):
    marker = f"unsub{time.monotonic_ns()}"
    proc = swaks(world.postfix.smtp_port, to="shop.example@example.net",
                 sender="news@shop.example",
                 header={"From": "news@shop.example", "Subject": f"News {marker}"},
                 body="This week's offers.")
    assert proc.returncode == 0, proc.stdout
    msg = world.capture.wait_for(lambda m: marker in m.text)
    url = msg.header("List-Unsubscribe").strip("<>")
    assert msg.header("List-Unsubscribe") == msg.header("X-Aliasd-Disable")

    token = url.rsplit("/", 1)[1]
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (url.rsplit("/", 1)[0] + "/" + flipped, world.base_url + "/oneclick/forged.x.y"):
        page = requests.post(bad, data={"List-Unsubscribe": "One-Click"}, timeout=10)
        assert page.status_code == 400 and "Nothing was done" in page.text
        assert "not valid" in page.text
    assert _alias_state(world, "shop.example@example.net") == "active"

    shown = requests.get(url, timeout=10)  # a GET (link scanners) only shows the action
    assert shown.status_code == 200 and "Disable the alias shop.example@example.net" in shown.text
    assert _alias_state(world, "shop.example@example.net") == "active"

    # RFC 8058: the mail client POSTs List-Unsubscribe=One-Click, no cookie, no CSRF token
    done = requests.post(url, data={"List-Unsubscribe": "One-Click"}, timeout=10)
    assert done.status_code == 200, done.text
    assert "shop.example@example.net is disabled" in done.text
    assert _alias_state(world, "shop.example@example.net") == "disabled"
    # the lookup server's replica follows within its sync interval: then RCPT is refused
    refused = _wait(lambda: "550 5.1.1" in (p := swaks(
        world.postfix.smtp_port, to="shop.example@example.net", sender="news@shop.example",
        body="more")).stdout and p)
    assert refused.returncode != 0


def test_expired_one_click_link_does_nothing(world):
    from aliasd.core import oneclick

    with world.db.session() as s:
        alias_id = s.scalar(select(Alias.id).where(Alias.address == ALIAS))
    token = oneclick.make_token(world.settings, oneclick.OneClick(oneclick.DISABLE, alias_id))
    time.sleep(1.1)
    strict = make_app(world.settings, oneclick_max_age_days=0)  # links live 0 days here
    page = strict.test_client().post(f"/oneclick/{token}",
                                     data={"List-Unsubscribe": "One-Click"})
    assert page.status_code == 400
    assert "this link has expired" in page.get_data(as_text=True)
    assert _alias_state(world) == "active"


def _sign_in(page, base: str, name: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(base + "/")


@pytest.mark.browser
def test_review_in_chromium_previews_safely_and_releases(world):
    from playwright.sync_api import sync_playwright

    marker = f"web{time.monotonic_ns()}"
    html = (
        "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n"
        f"From: offers@deals.example\nTo: undisclosed-recipients:;\nX-Priority: 1\n"
        f"Subject: CHEAP WATCHES TODAY {marker.upper()}\n\n"
        f"<html><body><p>Hello <b>friend</b> {marker}</p>"
        "<img src=\"http://203.0.113.9/track.png\"><script>alert(1)</script></body></html>\n"
    )
    proc = swaks(world.postfix.smtp_port, to=ALIAS, sender="offers@deals.example", data=html)
    assert proc.returncode == 0, proc.stdout
    [row] = _wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            requested: list[str] = []
            bob = browser.new_page()
            _sign_in(bob, world.base_url, "bob")
            bob.goto(world.base_url + "/quarantine/")
            assert marker.upper() not in bob.content()  # not bob's
            assert bob.goto(f"{world.base_url}/quarantine/{row['id']}").status == 404

            page = browser.new_page()
            page.on("request", lambda r: requested.append(r.url))
            _sign_in(page, world.base_url, "alice")
            page.get_by_role("link", name="Quarantine").click()
            page.get_by_role("link", name=f"CHEAP WATCHES TODAY {marker.upper()}").click()
            preview = page.locator("#preview").inner_text()
            assert f"Hello friend {marker}" in preview
            assert "<" not in preview and "alert" not in preview
            assert "SUBJ_ALL_CAPS" in page.locator("#symbols").inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "quarantine-message.png"), full_page=True)
            page.get_by_role("button", name=f"Release message {row['id']}").click()
            assert f"Released message {row['id']}." in page.locator(".messages").inner_text()
            assert "learned it as not spam" in page.locator(".messages").inner_text()
            assert all(u.startswith(world.base_url) for u in requested), requested
        finally:
            browser.close()
    msg = world.capture.wait_for(lambda m: marker in m.text)
    assert msg.rcpt_tos == [MAILBOX] and "203.0.113.9/track.png" in msg.text  # unchanged body
    assert row["queue_id"] not in world.postfix_hold_queue()


def _learned_spam(world: World) -> int:
    proc = world.cli("stat")
    return int(re.search(r"BAYES_SPAM type: \w+; learned: (\d+)", proc.stdout).group(1))


def _forward_as_attachment(sender: str, to: str, inner: bytes | None) -> bytes:
    from email.message import EmailMessage

    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = sender, to, "Fwd: missed spam"
    outer.set_content("This one got through.")
    if inner is not None:  # as mail clients attach a message: message/rfc822, 8bit
        import email as email_pkg

        outer.add_attachment(email_pkg.message_from_bytes(inner))
    return outer.as_bytes()


def _smtp(world: World, sender: str, to: str, raw: bytes) -> tuple[int, str]:
    import smtplib

    with smtplib.SMTP("127.0.0.1", world.postfix.smtp_port, timeout=60) as smtp:
        try:
            smtp.sendmail(sender, [to], raw)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return code, text.decode()
    return 250, ""


def test_owner_forwarding_a_missed_spam_to_spam_at_domain_teaches_the_filter(world):
    marker = f"fwd{time.monotonic_ns()}"
    inner = (f"From: winner@lottery.example\nTo: {ALIAS}\nSubject: You won {marker}\n"
             f"Message-ID: <{marker}@lottery.example>\n\n"
             "Claim your prize of one million dollars now, send your bank details.\n").encode()
    before = _learned_spam(world)
    code, text = _smtp(world, MAILBOX, "spam@example.net",
                       _forward_as_attachment(MAILBOX, "spam@example.net", inner))
    assert code == 250, text
    assert _learned_spam(world) == before + 1
    time.sleep(0.5)
    assert not [m for m in world.capture.messages if marker in m.text]  # consumed, not sent on


def test_spam_at_domain_refuses_strangers_and_explains_a_missing_attachment(world):
    inner = b"From: a@b.example\nSubject: x\n\nsome spam text here\n"
    before = _learned_spam(world)
    code, text = _smtp(world, "mallory@evil.example", "spam@example.net",
                       _forward_as_attachment("mallory@evil.example", "spam@example.net", inner))
    assert code == 550 and "Only the owner of example.net may write" in text
    code, text = _smtp(world, MAILBOX, "ham@example.net",
                       _forward_as_attachment(MAILBOX, "ham@example.net", None))
    assert code == 550 and "no message attached" in text
    broken = _forward_as_attachment(MAILBOX, "spam@example.net", b"").replace(
        b"Content-Disposition", b"X-Nothing")
    code, text = _smtp(world, MAILBOX, "spam@example.net", broken)
    assert code == 550 and "empty or broken" in text, text
    assert _learned_spam(world) == before


def test_queued_release_from_the_web_is_carried_out_by_quarantine_apply(world):
    from tests.harness.webapp import page_token, signed_in

    marker = f"queued{time.monotonic_ns()}"
    assert _send_suspicious(world, marker).returncode == 0
    [row] = _wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    _wait(lambda: row["queue_id"] in world.postfix_hold_queue())
    Path(world.settings.data_dir).mkdir(parents=True, exist_ok=True)
    wake = Path(world.settings.quarantine_requests_file)
    wake.unlink(missing_ok=True)
    app = make_app(world.settings, quarantine_release_mode="queued")  # as the web unit runs
    alice = signed_in(app, "alice")
    page = alice.post(f"/quarantine/{row['id']}/decide", follow_redirects=True, data={
        "action": "release", "learn": "1", "csrf_token": page_token(alice, "/quarantine/")})
    text = page.get_data(as_text=True)
    assert f"Release of message {row['id']} requested" in text and "release requested" in text
    assert wake.exists()  # what the root path unit watches
    assert row["queue_id"] in world.postfix_hold_queue()  # nothing happened yet

    before = _learned_ham(world)
    proc = world.cli("quarantine", "apply")
    assert proc.returncode == 0, proc.stderr
    assert f"quarantined message {row['id']}: released (learning:" in proc.stdout
    msg = world.capture.wait_for(lambda m: marker in m.text)
    assert msg.rcpt_tos == [MAILBOX]
    assert _learned_ham(world) == before + 1
    [listed] = [r for r in json.loads(world.cli("quarantine", "list", "--all", "--json").stdout)
                if r["id"] == row["id"]]
    assert listed["state"] == "released" and listed["decided_by"] == "alice"
    assert world.cli("quarantine", "apply").stdout == ""  # nothing left to do


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory):
    """An RSA key pair made by openssl, and the TXT record publishing it."""
    import base64

    base = tmp_path_factory.mktemp("dkim")
    private = base / "key.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(private), "2048"], check=True,
                   capture_output=True)
    der = subprocess.run(["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return private.read_bytes(), b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


def _signed(key: bytes, marker: str, *, suspicious: bool, oversign: bool = False) -> bytes:
    import dkim

    subject = f"CHEAP WATCHES TODAY {marker.upper()}" if suspicious else f"Receipt {marker}"
    extra = "To: undisclosed-recipients:;\r\nX-Priority: 1\r\n" if suspicious else f"To: {ALIAS}\r\n"
    raw = (f"From: offers@deals.example\r\n{extra}Subject: {subject}\r\n"
           f"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{marker}@deals.example>\r\n"
           f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
           f"Signed body {marker}\r\n").encode()
    headers = [b"from", b"to", b"subject", b"date", b"message-id"]
    if oversign:  # sign the absence of List-Unsubscribe too
        headers += [b"list-unsubscribe", b"list-unsubscribe-post"]
    sig = dkim.sign(raw, b"sel", b"deals.example", key, include_headers=headers)
    return sig + raw


def _verifies(data: bytes, txt: bytes) -> bool:
    import dkim

    # The key record comes from here rather than DNS: what is checked is that the bytes
    # Postfix delivered still match the signature.
    return dkim.verify(data, dnsfunc=lambda name, timeout=5: txt)


def test_released_and_forwarded_mail_keeps_a_valid_dkim_signature(world, dkim_key):
    key, txt = dkim_key
    held_marker = f"dkimheld{time.monotonic_ns()}"
    code, text = _smtp(world, "offers@deals.example", ALIAS,
                       _signed(key, held_marker, suspicious=True))
    assert code == 250, text
    [row] = _wait(lambda: [r for r in world.held() if held_marker.upper() in (r["subject"] or "")])
    proc = world.cli("quarantine", "release", str(row["id"]))
    assert proc.returncode == 0, proc.stderr
    released = world.capture.wait_for(lambda m: held_marker in m.text)
    assert released.header("X-Spamd-Result") and _verifies(released.data, txt)
    assert not _verifies(released.data.replace(b"Signed body", b"Signed Body"), txt)  # it can fail

    plain_marker = f"dkimfwd{time.monotonic_ns()}"
    assert _smtp(world, "offers@deals.example", ALIAS,
                 _signed(key, plain_marker, suspicious=False))[0] == 250
    forwarded = world.capture.wait_for(lambda m: plain_marker in m.text)
    assert forwarded.header("List-Unsubscribe") and _verifies(forwarded.data, txt)

    over_marker = f"dkimover{time.monotonic_ns()}"
    assert _smtp(world, "offers@deals.example", ALIAS,
                 _signed(key, over_marker, suspicious=False, oversign=True))[0] == 250
    oversigned = world.capture.wait_for(lambda m: over_marker in m.text)
    assert oversigned.header("List-Unsubscribe") is None  # adding it would break the signature
    assert oversigned.header("X-Aliasd-Disable") and _verifies(oversigned.data, txt)


def test_daily_digest_mails_the_owner_what_is_held(world):
    marker = f"digest{time.monotonic_ns()}"
    assert _send_suspicious(world, marker).returncode == 0
    _wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
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

"""End to end through a real Postfix: a message scoring between the quarantine and
reject thresholds is accepted, held in Postfix's hold queue (not forwarded), listed
by ``aliasd quarantine list``, and released (learning it as ham) or deleted, from the
CLI and from the web in Chromium; the one-click headers ride along on forwarded mail,
and DKIM signatures still verify. One Postfix and one milter per engine."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from aliasd.models import Alias, MessageSample
from tests.harness.browser import follow
from tests.harness.postfix import swaks
from tests.harness.quarantine_world import (
    ALIAS,
    MAILBOX,
    World,
    learned_ham,
    running_world,
    send_suspicious,
    smtp,
    wait,
)
from tests.harness.webapp import PASSWORD, make_app
from tests.test_web_browser import ARTIFACTS, CHROMIUM_ARGS

pytestmark = pytest.mark.postfix


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    with running_world(request, tmp_path_factory, request.param) as w:
        yield w


def _alias_counts(world) -> tuple[int, int, int]:
    """(forwarded, rejected, held) as the alias pages show them."""
    with world.db.session() as s:
        a = s.scalars(select(Alias).where(Alias.address == ALIAS)).one()
        return a.forwarded_count, a.rejected_count, a.held_count


def test_suspicious_message_is_held_listed_and_released_as_ham(world):
    marker = f"held{time.monotonic_ns()}"
    forwarded, rejected, held = _alias_counts(world)
    proc = send_suspicious(world, marker)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # 250: accepted from the sender
    [row] = wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    assert row["alias"] == ALIAS and row["sender"] == "offers@deals.example"
    assert 5 <= row["score"] < 15 and "SUBJ_ALL_CAPS" in row["symbols"]
    assert row["queue_id"] in wait(world.postfix_hold_queue)
    time.sleep(1.0)  # would it be forwarded? it must not
    assert not [m for m in world.capture.messages if marker in m.text]
    # held: neither forwarded nor rejected (yet)
    assert _alias_counts(world) == (forwarded, rejected, held + 1)

    before = learned_ham(world)
    proc = world.cli("quarantine", "release", str(row["id"]), "--learn-ham")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "released (learning: learned)" in proc.stdout
    msg = world.capture.wait_for(lambda m: marker in m.text)
    assert msg.rcpt_tos == [MAILBOX]
    assert f"Original body line {marker}\r\nBest regards." in msg.text
    assert msg.header("Subject") == f"CHEAP WATCHES TODAY {marker.upper()}"  # not rewritten
    assert msg.header("X-Aliasd-Alias") == f"{ALIAS} (site github.com)"
    assert learned_ham(world) == before + 1
    assert row["queue_id"] not in world.postfix_hold_queue()
    assert _alias_counts(world) == (forwarded + 1, rejected, held)  # released: forwarded

    again = world.cli("quarantine", "release", str(row["id"]))
    assert again.returncode == 1
    assert f"quarantined message {row['id']} was already released" in again.stderr


def test_held_message_deleted_with_learn_spam_is_gone_from_postfix(world):
    marker = f"del{time.monotonic_ns()}"
    assert send_suspicious(world, marker).returncode == 0
    [row] = wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    wait(lambda: row["queue_id"] in world.postfix_hold_queue())
    proc = world.cli("quarantine", "delete", str(row["id"]), "--learn-spam")
    assert proc.returncode == 0, proc.stderr
    assert "deleted (learning: learned)" in proc.stdout
    assert row["queue_id"] not in world.postfix_hold_queue()
    assert not [r for r in world.held() if r["id"] == row["id"]]
    again = world.cli("quarantine", "release", str(row["id"]))
    assert again.returncode == 1 and "was already deleted" in again.stderr


def test_releasing_a_message_postfix_no_longer_holds_says_so(world):
    marker = f"gone{time.monotonic_ns()}"
    assert send_suspicious(world, marker).returncode == 0
    [row] = wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    wait(lambda: row["queue_id"] in world.postfix_hold_queue())
    subprocess.run(["postsuper", "-c", str(world.postfix.config_dir), "-d", row["queue_id"]],
                   capture_output=True, check=True)
    proc = world.cli("quarantine", "release", str(row["id"]))
    assert proc.returncode == 1
    assert "no longer in Postfix's hold queue; nothing was delivered" in proc.stderr
    listed = json.loads(world.cli("quarantine", "list", "--all", "--json").stdout)
    assert [r["state"] for r in listed if r["id"] == row["id"]] == ["purged"]


def test_a_message_held_longer_than_postfixs_queue_lifetime_is_delivered_when_released(
        world):
    # Postfix returns mail to its sender once it has been queued longer than
    # maximal_queue_lifetime (5 days by default) and a delivery attempt is deferred; a
    # held message keeps waiting up to quarantine_keep_days (30). Released, it must get
    # Postfix's usual retries, not a bounce at the first "try again later".
    cfg = str(world.postfix.config_dir)

    def lifetime(value: str) -> None:
        subprocess.run(["postconf", "-c", cfg, "-e", f"maximal_queue_lifetime={value}",
                        f"bounce_queue_lifetime={value}"], check=True)
        subprocess.run(["postfix", "-c", cfg, "reload"], check=True, capture_output=True)

    marker = f"old{time.monotonic_ns()}"
    assert send_suspicious(world, marker).returncode == 0
    [row] = wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    lifetime("5s")
    deferred: list[str] = []

    def busy_once(address: str) -> str | None:  # the mailbox provider says "later" once
        if address == MAILBOX and not deferred:
            deferred.append(address)
            return "451 4.2.0 Mailbox busy, try again later"
        return None
    try:
        time.sleep(6)  # held longer than the queue lifetime
        world.capture.reject_rcpt = busy_once
        proc = world.cli("quarantine", "release", str(row["id"]))
        assert proc.returncode == 0, proc.stderr
        msg = world.capture.wait_for(lambda m: marker in m.text and m.rcpt_tos == [MAILBOX])
    finally:
        world.capture.reject_rcpt = lambda _addr: None
        lifetime("1h")
    assert deferred
    assert f"Original body line {marker}" in msg.text
    assert not [m for m in world.capture.messages  # nothing went back to the sender
                if "offers@deals.example" in m.rcpt_tos and marker.upper() in m.text]


def test_a_release_whose_learning_fails_still_says_the_message_was_released(world):
    from tests.harness.cli import run_cli_in_process
    from tests.harness.webapp import page_token, signed_in

    # the filter is rspamd, and its controller is down: releasing works, learning not
    down = {"scanner_backend": "rspamd", "rspamd_controller_url": "http://127.0.0.1:9"}
    rows = []
    for n in range(2):
        marker = f"nolearn{n}x{time.monotonic_ns()}"
        assert send_suspicious(world, marker).returncode == 0
        [row] = wait(lambda m=marker: [r for r in world.held()
                                       if m.upper() in (r["subject"] or "")])
        rows.append((row, marker))
    (web_row, web_marker), (cli_row, cli_marker) = rows

    alice = signed_in(make_app(world.settings, **down), "alice")
    page = alice.post(f"/quarantine/{web_row['id']}/decide", follow_redirects=True, data={
        "action": "release", "learn": "1", "csrf_token": page_token(alice, "/quarantine/")})
    text = page.get_data(as_text=True)
    assert f"Released message {web_row['id']}." in text
    assert "the filter could not learn it" in text
    world.capture.wait_for(lambda m: web_marker in m.text)

    env = dict(world.env, ALIASD_SCANNER_BACKEND="rspamd",
               ALIASD_RSPAMD_CONTROLLER_URL="http://127.0.0.1:9")
    proc = run_cli_in_process(env, ("quarantine", "release", str(cli_row["id"]), "--learn-ham"))
    assert proc.returncode == 1  # not all that was asked was done
    assert f"quarantined message {cli_row['id']}: released" in proc.stdout + proc.stderr
    assert "rspamd controller unreachable" in proc.stderr
    world.capture.wait_for(lambda m: cli_marker in m.text)


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
    sample = wait(kept)
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
    refused = wait(lambda: "550 5.1.1" in (p := swaks(
        world.postfix.smtp_port, to="shop.example@example.net", sender="news@shop.example",
        body="more")).stdout and p)
    assert refused.returncode != 0


def test_the_block_sender_link_stops_the_next_mailing_from_that_sender(world):
    # Bulk mail comes with a new bounce address (VERP) for every message; the sender the
    # owner sees, and blocks, is the From: address.
    from aliasd.core import aliases as core
    from aliasd.models import User

    marker = f"verp{time.monotonic_ns()}"
    address = f"{marker}.example@example.net"
    with world.db.session() as s:
        core.create_alias(s, address, s.scalar(select(User).where(User.username == "alice")))

    def mailing(n: int) -> subprocess.CompletedProcess:
        return swaks(world.postfix.smtp_port, to=address,
                     sender=f"bounce-{n}-{marker}=example.net@mail.bulk.example",
                     header={"From": "Shop News <news@shop.example>",
                             "Subject": f"Offers {n} {marker}"}, body="This week's offers.")
    assert wait(lambda: (p := mailing(1)).returncode == 0 and p)  # once lookupd knows it
    msg = world.capture.wait_for(lambda m: f"Offers 1 {marker}" in m.text)
    url = msg.header("X-Aliasd-Block-Sender").strip("<>")
    shown = requests.get(url, timeout=10)
    assert f"Block news@shop.example for the alias {address}" in shown.text
    done = requests.post(url, timeout=10)
    assert done.status_code == 200 and f"news@shop.example is blocked for {address}" in done.text
    # the milter reads the blocks again within seconds: the next mailing is refused
    refused = wait(lambda: (p := mailing(2)).returncode != 0 and p)
    assert "550" in refused.stdout


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
    follow(page.get_by_role("button", name="Sign in"))
    page.wait_for_url(base + "/")


@pytest.mark.browser
def test_the_quarantine_page_is_titled_quarantine_and_shows_the_threshold_form_once(world):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            _sign_in(page, world.base_url, "alice")
            follow(page.get_by_role("link", name="Quarantine"))
            assert page.title() == "Quarantine · aliasd"
            assert page.locator("#score").count() == 1
            assert page.get_by_role("heading", name="When to hold my mail").count() == 1
        finally:
            browser.close()


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
    [row] = wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])

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
            follow(page.get_by_role("link", name="Quarantine"))
            follow(page.get_by_role("link", name=f"CHEAP WATCHES TODAY {marker.upper()}"))
            preview = page.locator("#preview").inner_text()
            assert f"Hello friend {marker}" in preview
            assert "<" not in preview and "alert" not in preview
            assert "SUBJ_ALL_CAPS" in page.locator("#symbols").inner_text()
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "quarantine-message.png"), full_page=True)
            follow(page.get_by_role("button", name=f"Release message {row['id']}"))
            assert f"Released message {row['id']}." in page.locator(".messages").inner_text()
            assert "learned it as not spam" in page.locator(".messages").inner_text()
            assert all(u.startswith(world.base_url) for u in requested), requested
        finally:
            browser.close()
    msg = world.capture.wait_for(lambda m: marker in m.text)
    assert msg.rcpt_tos == [MAILBOX] and "203.0.113.9/track.png" in msg.text  # unchanged body
    assert row["queue_id"] not in world.postfix_hold_queue()



def test_queued_release_from_the_web_is_carried_out_by_quarantine_apply(world):
    from tests.harness.webapp import page_token, signed_in

    marker = f"queued{time.monotonic_ns()}"
    assert send_suspicious(world, marker).returncode == 0
    [row] = wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    wait(lambda: row["queue_id"] in world.postfix_hold_queue())
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

    before = learned_ham(world)
    proc = world.cli("quarantine", "apply")
    assert proc.returncode == 0, proc.stderr
    assert f"quarantined message {row['id']}: released (learning:" in proc.stdout
    msg = world.capture.wait_for(lambda m: marker in m.text)
    assert msg.rcpt_tos == [MAILBOX]
    assert learned_ham(world) == before + 1
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


def _verifies(data: bytes, txt: bytes, domain: bytes = b"deals.example") -> bool:
    import dkim

    # The key record comes from here rather than DNS: what is checked is that the bytes
    # Postfix delivered still match the signature of ``domain`` (forwarded mail carries
    # aliasd's own signature too, above the sender's).
    verifier = dkim.DKIM(data)
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    count = head.count(b"\r\ndkim-signature:") + head.startswith(b"dkim-signature:")
    for index in range(count):
        try:
            if verifier.verify(idx=index, dnsfunc=lambda name, timeout=5: txt) and \
                    verifier.domain == domain:
                return True
        except dkim.DKIMException:  # an altered body: this one does not verify
            continue
    return False


def _our_signatures(world, data: bytes) -> list[bytes]:
    """d= of aliasd's signatures that verify with the alias domain's RSA key (no DNS
    in this world: the record is the key's own)."""
    from aliasd.mailauth import keys

    rsa = next(k for k in keys.signing_keys(world.settings, "example.net")
               if k.algorithm == keys.RSA)
    txt = rsa.dns_txt().encode()
    return [b"example.net"] if _verifies(data, txt, b"example.net") else []


def test_released_and_forwarded_mail_keeps_a_valid_dkim_signature(world, dkim_key):
    key, txt = dkim_key
    held_marker = f"dkimheld{time.monotonic_ns()}"
    code, text = smtp(world, "offers@deals.example", ALIAS,
                       _signed(key, held_marker, suspicious=True))
    assert code == 250, text
    [row] = wait(lambda: [r for r in world.held() if held_marker.upper() in (r["subject"] or "")])
    proc = world.cli("quarantine", "release", str(row["id"]))
    assert proc.returncode == 0, proc.stderr
    released = world.capture.wait_for(lambda m: held_marker in m.text)
    assert released.header("X-Spamd-Result") and _verifies(released.data, txt)
    assert not _verifies(released.data.replace(b"Signed body", b"Signed Body"), txt)  # it can fail

    plain_marker = f"dkimfwd{time.monotonic_ns()}"
    assert smtp(world, "offers@deals.example", ALIAS,
                 _signed(key, plain_marker, suspicious=False))[0] == 250
    forwarded = world.capture.wait_for(lambda m: plain_marker in m.text)
    assert forwarded.header("List-Unsubscribe") and _verifies(forwarded.data, txt)
    # and aliasd's own over the one-click headers it added (RFC 8058 section 4)
    assert _our_signatures(world, forwarded.data) == [b"example.net"]
    assert b"list-unsubscribe-post" in forwarded.data.split(b"\r\n\r\n")[0].lower().split(
        b"dkim-signature:")[1].split(b"b=")[0].replace(b"\r\n", b"").replace(b" ", b"")

    over_marker = f"dkimover{time.monotonic_ns()}"
    assert smtp(world, "offers@deals.example", ALIAS,
                 _signed(key, over_marker, suspicious=False, oversign=True))[0] == 250
    oversigned = world.capture.wait_for(lambda m: over_marker in m.text)
    assert oversigned.header("List-Unsubscribe") is None  # adding it would break the signature
    assert oversigned.header("X-Aliasd-Disable") and _verifies(oversigned.data, txt)
    assert _our_signatures(world, oversigned.data) == []  # no one-click pair: not signed



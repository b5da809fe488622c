"""Leak attribution end to end: swaks → a real Postfix smtpd with aliasd's lookup map
and the real ``aliasd milter`` → the capture server, read back as a user would: the
report's JSON export, the site page, the API. Senders as real sites use them (their own
subdomains, mail domains carrying their name, a parent company's or rebranded domain,
mailing services' bounce domains in the envelope, a helpdesk platform), a partner the
site passed the address to, and look-alike phishing. One Postfix per engine."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.models import Alias, BlockRule, User
from aliasd.postfix.config_lines import postfix_table
from aliasd.postfix.milter_lines import postfix_milter_settings
from tests.harness.cli import settings_env
from tests.harness.databases import open_clean_database
from tests.harness.net import free_port, wait_for_milter, wait_for_port
from tests.harness.postfix import CaptureServer, PostfixInstance, swaks
from tests.harness.processes import start_logged, stop_process
from tests.harness.webapp import add_user, make_app, page_token, signed_in

pytestmark = pytest.mark.postfix

# site → created long ago (True) or just now (False: its first mail is learned)
SITES = {
    "stackoverflow.com": True, "twitter.com": True, "dhl.com": True, "bitbucket.org": True,
    "lumora.example": True, "booking.example": True, "paypal.com": True,
    "newsite.example": False, "bücher.example": True, "quiet.example": True,
}  # fmt: skip
SPAMMY = {
    "To": "undisclosed-recipients:;",
    "Content-Type": "text/html",
}
PHISH_BODY = '<html><a href="http://192.0.2.9/login">VERIFY YOUR ACCOUNT NOW</a></html>'


def local(site: str) -> str:
    return site.replace("ü", "u").split(".")[0] + "@example.net"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"attrib-{request.param}")
    db = open_clean_database(request.param, base, request)
    add_user(db, "alice", domain="example.net")
    with db.session() as s:
        alice = s.scalar(select(User).where(User.username == "alice"))
        for site, old in SITES.items():
            alias = core.create_alias(s, local(site), alice, site=site)
            if old:
                s.flush()
                s.execute(update(Alias).where(Alias.id == alias.id)
                          .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=40)))
    settings = load_settings(
        environ={}, data_dir=str(base / "data"), database_url=db.url, env="development",
        secret_key="test-secret-key-long-enough", milter_listen=f"127.0.0.1:{free_port()}",
        blocklist_reload_command="",
    )  # fmt: skip
    env = settings_env(settings)
    env["ALIASD_MILTER_LISTEN"] = settings.milter_listen
    env["ALIASD_BLOCKLIST_RELOAD_COMMAND"] = "true"
    pf_dir = Path(tempfile.mkdtemp(prefix="aliasd-attrib-pf-", dir="/tmp"))
    os.chmod(pf_dir, 0o755)
    milter = start_logged([sys.executable, "-m", "aliasd", "milter"], env, base / "milter.log")
    lookup_port = free_port()
    lookupd = start_logged(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{lookup_port}",
         "--tcp", ""], env, base / "lookupd.log",
    )  # fmt: skip
    table = postfix_table("socketmap", f"127.0.0.1:{lookup_port}", "virtual")
    capture = CaptureServer()
    capture.start()
    postfix = PostfixInstance(pf_dir / "pf", relay_port=capture.port, main_cf={
        "virtual_alias_domains": table, "virtual_alias_maps": table,
        "recipient_delimiter": "+", **postfix_milter_settings(settings),
    })  # fmt: skip
    wait_for_port(lookup_port)
    wait_for_milter(settings.milter_listen)
    postfix.start()
    w = type("World", (), {})()
    w.db, w.settings, w.postfix, w.capture = db, settings, postfix, capture
    w.app = make_app(settings)
    _send_traffic(w)
    yield w
    for proc in (milter, lookupd):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    postfix.stop()
    capture.stop()
    for proc in (milter, lookupd):
        stop_process(proc)
    shutil.rmtree(pf_dir, ignore_errors=True)
    db.dispose()


def _send(w, site, sender, from_header, subject, *, header=None, body="Hello, here is news.",
          expect_ok=True):
    marker = f"m{time.monotonic_ns()}"
    headers = {"From": from_header, "Subject": f"{subject} {marker}", **(header or {})}
    proc = swaks(w.postfix.smtp_port, to=local(site), sender=sender, header=headers, body=body)
    if expect_ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        w.capture.wait_for(lambda m: marker in m.text)
    return proc


def _send_traffic(w) -> None:
    # the sites' own mail, as real sites send it
    _send(w, "stackoverflow.com", "bounces+u123@sendgrid.net",
          "Stack Overflow <do-not-reply@stackoverflow.email>", "New answer to your question")
    _send(w, "twitter.com", "0100018c-bounce@amazonses.com", "X <info@x.com>",
          "Your weekly summary")
    _send(w, "dhl.com", "noreply@mail.dhl.de", "DHL Paket <noreply@mail.dhl.de>",
          "Ihre Sendung kommt heute")
    _send(w, "bitbucket.org", "bounce-1@mcsv.net", "Atlassian <noreply@atlassian.com>",
          "Your pull request was approved")
    _send(w, "lumora.example", "", "Lumora Support <support@lumora.zendesk.com>",
          "Your ticket was updated")
    _send(w, "bücher.example", "news@xn--bcher-kva.example", "news@bücher.example",
          "Neue Bücher")
    # a site signed up for just now: its first mail is learned, later mail is its own
    _send(w, "newsite.example", "hello@nwst-mailer.example", "hello@nwst-mailer.example",
          "Welcome to Newsite")
    _send(w, "newsite.example", "hello@nwst-mailer.example", "hello@nwst-mailer.example",
          "Your first week")
    # a booking site passes the address to a hotel: shared, not leaked
    _send(w, "booking.example", "res@booking.example", "res@booking.example", "Booking confirmed")
    _send(w, "booking.example", "stay@hotel-alpina.example", "stay@hotel-alpina.example",
          "Your stay at Hotel Alpina")
    # PayPal's German domain, then look-alike phishing
    _send(w, "paypal.com", "service@paypal.de", "PayPal <service@paypal.de>", "Ihre Zahlung")
    _send(w, "paypal.com", "security@mail.paypal-account-verify.com",
          "PayPal <security@paypal-account-verify.com>", "URGENT ACCOUNT SUSPENDED",
          header=SPAMMY, body=PHISH_BODY)
    # garbled From: and an IP-literal From: never break the mail path
    _send(w, "quiet.example", "", "=?utf-8?q?broken", "No proper From")
    _send(w, "quiet.example", "x@[192.0.2.1]", "x@[192.0.2.1]", "From an IP literal")


def _export(w) -> dict[str, dict]:
    client = signed_in(w.app, "alice")
    response = client.get("/reports/export.json?period=all")
    assert response.status_code == 200
    return {row["site"]: row for row in json.loads(response.get_data(as_text=True))["rows"]}


def test_real_sender_patterns_are_the_sites_own_and_phishing_is_a_leak(world):
    rows = _export(world)
    clean = ["stackoverflow.com", "twitter.com", "dhl.com", "bitbucket.org", "lumora.example",
             "newsite.example", "xn--bcher-kva.example"]
    for site in clean:
        assert (rows[site]["status"], rows[site]["leaked"]) == ("clean", False), rows[site]
    assert rows["booking.example"]["status"] == "shared"
    assert not rows["booking.example"]["leaked"]
    assert "hotel-alpina.example" in rows["booking.example"]["reason"]
    paypal = rows["paypal.com"]
    assert paypal["status"] == "leaked" and paypal["leaked"]
    assert "paypal-account-verify.com" in paypal["reason"]
    assert "look-alike" in paypal["reason"]
    # unusable From: lines: the messages were delivered and judged without a crash
    assert rows["quiet.example"]["total"] == 2


def test_site_page_says_why_and_spares_the_sites_own_domains_from_blocks(world):
    client = signed_in(world.app, "alice")
    with world.db.session() as s:
        owner = s.scalar(select(User.id).where(User.username == "alice"))
    page = client.get(f"/reports/site/{owner}/paypal.com?period=all").get_data(as_text=True)
    status = re.search(r'<p id="leak-status"[^>]*>(.*?)</p>', page, re.S).group(1)
    assert "Leaked" in status and "paypal-account-verify.com" in status
    assert "URGENT ACCOUNT SUSPENDED" in page  # the evidence message
    assert 'id="block-suggestions"' in page and "Block paypal-account-verify.com" in page
    assert "Block paypal.de" not in page  # the site's own: no Block button
    # and the form refuses it when asked directly
    response = client.post(f"/reports/site/{owner}/paypal.com/block", data={
        "domain": "paypal.de", "csrf_token": page_token(client, f"/reports/site/{owner}/paypal.com")})
    assert response.status_code == 302
    with world.db.session() as s:
        assert s.scalar(select(BlockRule).where(BlockRule.value == "paypal.de")) is None


def test_dismiss_confirm_and_known_senders_through_the_page(world):
    client = signed_in(world.app, "alice")
    with world.db.session() as s:
        owner = s.scalar(select(User.id).where(User.username == "alice"))
    path = f"/reports/site/{owner}/booking.example"

    def post(action, **data):
        response = client.post(f"{path}/{action}",
                               data={**data, "csrf_token": page_token(client, path)})
        assert response.status_code == 302
        return client.get(response.headers["Location"]).get_data(as_text=True)

    page = post("leaks/confirm", sender="hotel-alpina.example")
    assert "counts as a leak" in page
    assert _export(world)["booking.example"]["status"] == "leaked"
    page = post("leaks/dismiss", sender="hotel-alpina.example")
    assert "Dismissed" in page and "now counts as one of its senders" in page
    assert _export(world)["booking.example"]["status"] == "clean"
    known = re.search(r'<section id="known-senders".*?</section>', page, re.S).group(0)
    assert "hotel-alpina.example" in known and "confirmed by you" in known
    # undo: the hotel is not the site's after all, the evidence counts again
    post("senders/remove", domain="hotel-alpina.example")
    assert _export(world)["booking.example"]["status"] == "shared"
    # "this sender belongs to this site", typed as an address
    post("senders", domain="Stay@Hotel-Alpina.example")
    assert _export(world)["booking.example"]["status"] == "clean"
    page = post("senders", domain="not a domain")
    assert "is not a sender domain" in page
    page = post("senders", domain="news@example.net")  # the domain this server serves
    assert "serves or your own mailbox domain" in page


def test_the_alias_page_offers_the_sites_senders(world):
    client = signed_in(world.app, "alice")
    with world.db.session() as s:
        alias_id = s.scalar(select(Alias.id).where(Alias.site == "newsite.example"))
    page = client.get(f"/aliases/{alias_id}").get_data(as_text=True)
    known = re.search(r'<section id="known-senders".*?</section>', page, re.S).group(0)
    assert "nwst-mailer.example" in known and "learned from the first mail" in known
    response = client.post(
        f"/reports/site/{_owner(world)}/newsite.example/senders",
        data={"domain": "newsite-partner.example", "back": f"/aliases/{alias_id}",
              "csrf_token": page_token(client, f"/aliases/{alias_id}")})
    assert response.headers["Location"].endswith(f"/aliases/{alias_id}")
    assert "newsite-partner.example" in client.get(f"/aliases/{alias_id}").get_data(as_text=True)


def test_dismiss_and_senders_through_the_api(world):
    client = signed_in(world.app, "alice")
    response = client.post("/settings/tokens", data={
        "name": "cli", "csrf_token": page_token(client, "/settings/tokens")})
    token = re.search(r'id="new-token">([^<]+)<', response.get_data(as_text=True)).group(1)
    api = world.app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    site = api.get("/api/sites/paypal.com", headers=auth).get_json()
    assert site["status"] == "leaked"
    [evidence] = [e for e in site["evidence"] if e["sender"] == "paypal-account-verify.com"]
    assert evidence["message"]["subject"].startswith("URGENT ACCOUNT SUSPENDED")
    assert evidence["message"]["spam"] and evidence["message"]["score"] >= 6
    assert {"domain": "paypal.com", "source": "site"}.items() <= site["senders"][0].items()
    dismissed = api.post("/api/sites/paypal.com/leaks/paypal-account-verify.com/dismiss",
                         headers=auth).get_json()
    assert dismissed["status"] == "clean"
    confirmed = api.post("/api/sites/paypal.com/leaks/paypal-account-verify.com/confirm",
                         headers=auth).get_json()
    assert confirmed["status"] == "leaked"
    added = api.post("/api/sites/dhl.com/senders", json={"domain": "dhl-partner.example"},
                     headers=auth)
    assert added.status_code == 201
    assert "dhl-partner.example" in {s["domain"] for s in added.get_json()["senders"]}
    removed = api.delete("/api/sites/dhl.com/senders/dhl-partner.example", headers=auth)
    assert removed.status_code == 200
    assert api.delete("/api/sites/dhl.com/senders/dhl-partner.example",
                      headers=auth).status_code == 404
    assert api.get("/api/sites/someone-elses.example", headers=auth).status_code == 404
    assert api.post("/api/sites/dhl.com/senders", json={"domain": 5},
                    headers=auth).status_code == 400


def _owner(world) -> int:
    with world.db.session() as s:
        return s.scalar(select(User.id).where(User.username == "alice"))

"""Report and blocklist pages: who sees what (users their own sites and rules, admins
everyone's), the block action writing the header_checks table, enable/disable, failed
reloads shown to the user, CSV/JSON export (both engines, Flask's client), and the
report in real headless Chromium without JavaScript: ranking, SVG chart, block button
(SQLite; a screenshot goes to test-artifacts/)."""

from __future__ import annotations

import csv
import datetime as dt
import html as html_lib
import io
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright
from sqlalchemy import select

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.core import blocking, events
from aliasd.models import BlockRule, SenderBlock
from tests.harness.browser import follow
from tests.harness.databases import sqlite_database
from tests.harness.webapp import PASSWORD, add_user, login, make_app, page_token, serve

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TODAY = dt.datetime.now(dt.UTC).date()


def deliver(db, rcpt: str, sender: str, *, spam: bool, days_ago: int = 0,
            subject: str = "hello") -> None:
    day = TODAY - dt.timedelta(days=days_ago)
    with db.session() as s:
        tgt = events.find_aliases(s, [rcpt], "+")
        facts = events.MessageFacts(envelope_sender=sender, subject=subject,
                                    at=dt.datetime(day.year, day.month, day.day, 9, tzinfo=dt.UTC))
        outcome = events.AppliedVerdict(score=9.0 if spam else 0.0, action="add header", is_spam=spam)
        events.record_message(s, tgt, facts, outcome)


def populate(db) -> dict[str, int]:
    ids = {
        "alice": add_user(db, "alice", domain="alice.example"),
        "bob": add_user(db, "bob", domain="bob.example"),
        "admin": add_user(db, "root", admin=True),
    }
    with db.session() as s:
        alice, bob = core.get_user(s, "alice"), core.get_user(s, "bob")
        core.create_alias(s, "shop.example@alice.example", alice, site="shop.example")
        core.create_alias(s, "forum.example@alice.example", alice, site="forum.example")
        core.create_alias(s, "secret.example@bob.example", bob, site="secret.example")
    for d, n in ((6, 1), (4, 3), (2, 2), (1, 5), (0, 2)):
        for i in range(n):
            deliver(db, "shop.example@alice.example", "promo@massnews.gr", spam=True,
                    days_ago=d, subject=f"Cheap watches {d}/{i}")
    deliver(db, "shop.example@alice.example", "orders@shop.example", spam=False, days_ago=3)
    deliver(db, "forum.example@alice.example", "x@spam.example", spam=True, days_ago=1)
    deliver(db, "secret.example@bob.example", "x@bobspam.example", spam=True, days_ago=1)
    return ids


@pytest.fixture
def web(database, settings, tmp_path):
    ids = populate(database)
    table = tmp_path / "header_checks"
    app = make_app(settings, blocklist_file=str(table), blocklist_reload_command="true")
    return app, ids, table, database


def test_users_see_their_own_sites_admins_everyone(web):
    app, ids, _table, _db = web
    alice = app.test_client()
    login(alice, "alice")
    page = alice.get("/reports/").get_data(as_text=True)
    assert "shop.example" in page and "forum.example" in page
    assert "secret.example" not in page
    assert alice.get(f"/reports/site/{ids['alice']}/shop.example").status_code == 200
    assert alice.get(f"/reports/site/{ids['bob']}/secret.example").status_code == 404
    data = alice.get("/reports/export.json?period=all").get_json()
    assert [r["site"] for r in data["rows"]] == ["shop.example", "forum.example"]
    assert data["rows"][0]["spam"] == 13 and data["rows"][0]["leaked"] is True
    admin = app.test_client()
    login(admin, "root")
    page = admin.get("/reports/").get_data(as_text=True)
    assert "secret.example" in page and "shop.example" in page
    assert admin.get(f"/reports/site/{ids['bob']}/secret.example").status_code == 200
    only_bob = admin.get("/reports/export.csv?user=bob").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(only_bob)))
    assert [(r["site"], r["owner"], r["spam"]) for r in rows] == [("secret.example", "bob", "1")]
    assert admin.get("/reports/export.csv?user=nobody").status_code == 404
    anonymous = app.test_client().get("/reports/")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]


def test_a_users_block_from_the_report_applies_to_their_own_aliases_only(web):
    app, ids, table, db = web
    alice = app.test_client()
    login(alice, "alice")
    site_url = f"/reports/site/{ids['alice']}/shop.example"
    token = page_token(alice, site_url)
    # Only domains that sent to the site can be blocked from its page.
    refused = alice.post(site_url + "/block", data={"domain": "gmail.com", "csrf_token": token},
                         follow_redirects=True)
    assert "did not send mail to this site" in refused.get_data(as_text=True)
    # Asking for a server-wide rule does not make one for a user.
    page = alice.post(site_url + "/block", data={"domain": "massnews.gr", "scope": "server",
                                                 "csrf_token": token},
                      follow_redirects=True).get_data(as_text=True)
    assert "Blocked massnews.gr for all your aliases." in page
    assert "yes, for your aliases" in page
    with db.session() as s:
        assert s.scalar(select(BlockRule)) is None
        [block] = s.scalars(select(SenderBlock)).all()
        assert (block.owner_id, block.alias_id, block.sender) == (ids["alice"], None, "massnews.gr")
    assert not table.exists() or "massnews" not in table.read_text()
    # CSRF is required.
    assert alice.post(site_url + "/block", data={"domain": "massnews.gr"}).status_code == 400
    # Bob cannot remove it; alice can.
    bob = app.test_client()
    login(bob, "bob")
    bob_token = page_token(bob, f"/reports/site/{ids['bob']}/secret.example")
    assert bob.post(site_url + "/unblock", data={"block_id": block.id,
                                                 "csrf_token": bob_token}).status_code == 404
    page = alice.post(site_url + "/unblock", data={"block_id": block.id, "csrf_token": token},
                      follow_redirects=True).get_data(as_text=True)
    assert "Unblocked massnews.gr." in page and "Block massnews.gr" in page


def test_an_admins_block_for_everyone_writes_table_and_blocklist_toggles(web):
    app, ids, table, db = web
    admin = app.test_client()
    login(admin, "root")
    site_url = f"/reports/site/{ids['alice']}/shop.example"
    token = page_token(admin, site_url)
    page = admin.post(site_url + "/block", data={"domain": "massnews.gr", "scope": "server",
                                                 "csrf_token": token},
                      follow_redirects=True).get_data(as_text=True)
    with db.session() as s:
        rule = s.scalar(select(BlockRule))
        assert (rule.value, rule.source, rule.owner_id) == ("massnews.gr", "manual", ids["admin"])
    assert f"Blocked massnews.gr for everyone (rule {rule.id})" in page
    assert f"yes, for everyone (rule {rule.id})" in page
    assert f'REJECT "Plz stop sending SPAM id={rule.id}"' in table.read_text()

    bob = app.test_client()
    login(bob, "bob")
    assert f'id="rule-{rule.id}"' not in bob.get("/blocklist/").get_data(as_text=True)
    token = page_token(bob, "/blocklist/")
    assert bob.post(f"/blocklist/{rule.id}/toggle",
                    data={"enabled": "0", "csrf_token": token}).status_code == 403
    listing = admin.get("/blocklist/").get_data(as_text=True)
    assert f'id="rule-{rule.id}"' in listing and "manual" in listing
    token = page_token(admin, "/blocklist/")
    admin.post(f"/blocklist/{rule.id}/toggle", data={"enabled": "0", "csrf_token": token})
    assert "massnews" not in table.read_text()
    admin.post(f"/blocklist/{rule.id}/toggle", data={"enabled": "1", "csrf_token": token})
    assert "massnews" in table.read_text()


def test_failed_reload_is_shown_to_the_user(database, settings, tmp_path):
    ids = populate(database)
    app = make_app(settings, blocklist_file=str(tmp_path / "hc"),
                   blocklist_reload_command="sh -c 'echo master not running >&2; exit 1'")
    admin = app.test_client()
    login(admin, "root")
    site_url = f"/reports/site/{ids['alice']}/shop.example"
    page = admin.post(site_url + "/block",
                      data={"domain": "massnews.gr", "scope": "server",
                            "csrf_token": page_token(admin, site_url)},
                      follow_redirects=True).get_data(as_text=True)
    assert "Postfix was not reloaded" in page and "master not running" in page


def test_enabling_a_rule_that_matches_ordinary_mail_is_refused_on_the_page(web):
    """The writer leaves such a rule out of the table, and the page says which and why."""
    app, _ids, table, db = web
    with db.session() as s:
        broad = BlockRule(kind="regex", value="^Received:", pattern="/^Received:/",
                          reject_text="every message", source="imported", enabled=False)
        s.add(broad)
    admin = app.test_client()
    login(admin, "root")
    token = page_token(admin, "/blocklist/")
    page = admin.post(f"/blocklist/{broad.id}/toggle", data={"enabled": "1", "csrf_token": token},
                      follow_redirects=True).get_data(as_text=True)
    assert f"rule {broad.id} not published: /^Received:/ matches the ordinary header line" in page
    assert "^Received:" not in table.read_text()


def test_report_in_chromium_without_javascript(tmp_path):
    db = sqlite_database(str(tmp_path / "aliasd.db"))
    settings = load_settings(environ={}, env="development", secret_key="b" * 32,
                             database_url=db.url, data_dir=str(tmp_path / "data"),
                             blocklist_file=str(tmp_path / "hc"), blocklist_reload_command="")
    populate(db)
    app = make_app(settings)
    ARTIFACTS.mkdir(exist_ok=True)
    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(java_script_enabled=False, viewport={"width": 1200, "height": 900})
            page.goto(base + "/login")
            page.get_by_label("User name").fill("alice")
            page.get_by_label("Password").fill(PASSWORD)
            follow(page.get_by_role("button", name="Sign in"))
            follow(page.get_by_role("link", name="Spam report"))
            expect(page.get_by_role("heading", name="Spam sources")).to_be_visible()
            ranking = page.locator("#ranking tbody tr")
            assert ranking.count() == 2
            first = ranking.nth(0).locator("th, td")
            assert [first.nth(i).inner_text() for i in (1, 2, 3)] == ["shop.example", "13", "92.9%"]
            assert "leaked" in ranking.nth(0).inner_text()
            page.get_by_label("Period").select_option("7d")
            follow(page.get_by_role("button", name="Show"))
            assert "period=7d" in page.url
            follow(page.get_by_role("link", name="shop.example"))
            chart = page.get_by_role("img", name="Spam per day for shop.example")
            expect(chart).to_be_visible()
            box = chart.bounding_box()
            assert box["width"] > 300 and box["height"] > 100
            bars = page.locator("svg.spam-chart rect.spam")
            assert bars.count() == 5
            # The tallest spam bar is the day with 5 messages, drawn taller than the 1.
            heights = [float(bars.nth(i).get_attribute("height")) for i in range(5)]
            assert max(heights) == pytest.approx(5 * min(heights))
            assert "Cheap watches 0/1" in page.locator("#subjects").inner_text()
            page.screenshot(path=str(ARTIFACTS / "spam-report-site.png"), full_page=True)
            follow(page.get_by_role("button", name="Block sender domain massnews.gr"))
            assert "Blocked massnews.gr for all your aliases" in page.locator(".messages").inner_text()
            assert "yes, for your aliases" in page.locator("#senders").inner_text()
            follow(page.get_by_role("link", name="← Spam report"))
            page.screenshot(path=str(ARTIFACTS / "spam-report.png"), full_page=True)
            page.go_back()
            follow(page.get_by_role("button", name="Unblock sender domain massnews.gr"))
            assert "Unblocked massnews.gr" in page.locator(".messages").inner_text()
            follow(page.get_by_role("link", name="Blocklist"))
            assert page.locator("tr[id^=rule-]").count() == 0  # a user's block is no Postfix rule
            page.screenshot(path=str(ARTIFACTS / "blocklist.png"), full_page=True)
        finally:
            browser.close()
    assert not (tmp_path / "hc").exists() or "massnews" not in (tmp_path / "hc").read_text()
    assert (ARTIFACTS / "spam-report-site.png").stat().st_size > 5000
    db.dispose()


def test_burn_from_the_site_page_confirms_then_marks_the_source_cut_off(web):
    app, ids, _table, db = web
    alice = app.test_client()
    login(alice, "alice")
    site_url = f"/reports/site/{ids['alice']}/forum.example"
    page = alice.get(site_url).get_data(as_text=True)
    assert "Burn alias…" in page
    with db.session() as s:
        alias_id = core.get_alias(s, "forum.example@alice.example").id
    token = page_token(alice, site_url)
    confirm = alice.post("/aliases/action", data={"csrf_token": token, "back": site_url,
                                                  "one": f"burn:{alias_id}"})
    assert "cannot be undone" in confirm.get_data(as_text=True)
    alice.post("/aliases/action", data={"csrf_token": token, "back": site_url, "action": "burn",
                                        "confirm": "yes", "ids": str(alias_id)})
    with db.session() as s:
        assert core.get_alias(s, "forum.example@alice.example").state == "burned"
    data = alice.get("/reports/export.json").get_json()
    forum = next(r for r in data["rows"] if r["site"] == "forum.example")
    assert forum["burned"] and forum["blocked"]
    assert "alias burned" in alice.get("/reports/").get_data(as_text=True)


def _form_with_button(html: str, label: str) -> tuple[str, dict[str, str]]:
    """(action, fields) of the form whose button has ``label``, as a browser submits it."""
    for form in re.findall(r"<form\b.*?</form>", html, re.S):
        if f">{label}</button>" in form:
            action = html_lib.unescape(re.search(r'action="([^"]*)"', form).group(1))
            fields = {html_lib.unescape(n): html_lib.unescape(v) for n, v in re.findall(
                r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form)}
            return action, fields
    raise AssertionError(f"no form with a {label!r} button")


def test_block_and_unblock_on_the_site_page_keep_the_chosen_period(web):
    app, ids, _table, _db = web
    alice = app.test_client()
    login(alice, "alice")
    site_url = f"/reports/site/{ids['alice']}/shop.example?period=7d"
    action, fields = _form_with_button(alice.get(site_url).get_data(as_text=True),
                                       "Block massnews.gr")
    response = alice.post(action, data=fields)
    assert response.status_code == 302 and response.headers["Location"].endswith(site_url)
    page = alice.get(site_url).get_data(as_text=True)
    assert "Blocked massnews.gr for all your aliases." in page
    action, fields = _form_with_button(page, "Unblock")
    response = alice.post(action, data=fields)
    assert response.status_code == 302 and response.headers["Location"].endswith(site_url)
    assert "Unblocked massnews.gr." in alice.get(site_url).get_data(as_text=True)


def test_an_unknown_user_in_the_report_filter_is_an_error_next_to_the_field(web):
    app, _ids, _table, _db = web
    admin = app.test_client()
    login(admin, "root")
    response = admin.get("/reports/?user=nosuch&period=7d")
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert '<p class="error" id="user-error">There is no user named &#39;nosuch&#39;.</p>' in html
    assert 'id="user" name="user" type="text" value="nosuch" aria-invalid="true"' in html
    assert 'id="ranking"' not in html and "Sign out" in html  # the report page, no report
    # A user never sees the filter: any name gives the same page, whoever exists.
    alice = app.test_client()
    login(alice, "alice")
    pages = [alice.get(f"/reports/?user={name}") for name in ("bob", "nosuch")]
    assert [p.status_code for p in pages] == [200, 200]

    def without_token(page):
        return re.sub(r'name="csrf_token" value="[^"]*"', "", page.get_data(as_text=True))

    assert without_token(pages[0]) == without_token(pages[1])


def test_enabling_a_rule_for_a_served_domain_is_refused_on_the_page(web, settings):
    """An imported rule naming a domain aliasd serves is kept disabled with the reason;
    the Enable button does not get around that: no server-wide rule, from any path,
    refuses the mail of a served or mailbox domain."""
    app, _ids, table, db = web
    with db.session() as s:
        served = blocking.add_regex_rule(s, settings, r"alice\.example", source="imported")
        assert not served.enabled and "imported disabled" in served.note
        rule_id = served.id
    admin = app.test_client()
    login(admin, "root")
    token = page_token(admin, "/blocklist/")
    page = admin.post(f"/blocklist/{rule_id}/toggle", data={"enabled": "1", "csrf_token": token},
                      follow_redirects=True).get_data(as_text=True)
    assert "alice.example is a domain this server serves" in page
    assert f"Rule {rule_id} enabled" not in page
    with db.session() as s:
        assert s.get(BlockRule, rule_id).enabled is False
    assert not table.exists() or "alice" not in table.read_text()


def test_server_wide_rules_made_from_a_users_spam_are_changed_by_admins_only(web, settings):
    """Auto-block makes a server-wide rule from the spam one user's aliases got; the user
    sees it, but turning it on or off changes everyone's mail: an admin's decision."""
    app, ids, table, db = web
    with db.session() as s:
        rule = blocking.block_domain(s, settings, "bobspam.example", source="auto",
                                     owner_id=ids["bob"], note="5+ spam within 24 h")
        rule_id = rule.id
    admin = app.test_client()
    login(admin, "root")
    admin.post(f"/blocklist/{rule_id}/toggle",
               data={"enabled": "0", "csrf_token": page_token(admin, "/blocklist/")})
    bob = app.test_client()
    login(bob, "bob")
    listing = bob.get("/blocklist/").get_data(as_text=True)
    assert f'id="rule-{rule_id}"' in listing and "bobspam" in listing
    assert f"Enable rule {rule_id}" not in listing
    refused = bob.post(f"/blocklist/{rule_id}/toggle",
                       data={"enabled": "1", "csrf_token": page_token(bob, "/blocklist/")})
    assert refused.status_code == 403
    with db.session() as s:
        assert s.get(BlockRule, rule_id).enabled is False
    assert "bobspam" not in table.read_text()
    assert f"Enable rule {rule_id}" in admin.get("/blocklist/").get_data(as_text=True)

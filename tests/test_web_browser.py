"""Real headless Chromium (Debian's, through Playwright) against the app on a real HTTP
server: sign in, create an alias, find it in the list, disable it. A screenshot of the
list page is kept in test-artifacts/. Runs on SQLite (one engine is enough for the
browser; the same views are tested on both engines in test_web_app.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from aliasd.config import load_settings
from aliasd.models import Alias
from tests.harness.browser import follow
from tests.harness.databases import sqlite_database
from tests.harness.webapp import PASSWORD, add_user, make_app, serve

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def app_with_alice(tmp_path):
    """A SQLite database with the user alice, and the app on it."""
    db = sqlite_database(str(tmp_path / "aliasd.db"))
    settings = load_settings(environ={}, env="development", secret_key="b" * 32,
                             database_url=db.url, data_dir=str(tmp_path / "data"))
    add_user(db, "alice", domain="alice.example")
    ARTIFACTS.mkdir(exist_ok=True)
    return db, make_app(settings)


def test_sign_in_create_find_disable(tmp_path):
    db, app = app_with_alice(tmp_path)
    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(java_script_enabled=False)  # works without JavaScript
            page.goto(base + "/")
            assert "/login" in page.url
            page.get_by_label("User name").fill("alice")
            page.get_by_label("Password").fill(PASSWORD)
            follow(page.get_by_role("button", name="Sign in"))
            page.wait_for_url(base + "/")
            expect(page.get_by_role("heading", name="Aliases")).to_be_visible()

            follow(page.get_by_role("link", name="New alias").first)
            page.get_by_label("Site", exact=True).fill("https://www.GitHub.com/login")
            follow(page.get_by_role("button", name="Propose address"))
            assert "github.com@alice.example" in page.locator("#proposal").inner_text()
            page.get_by_label("Note").fill("code hosting")
            follow(page.get_by_role("button", name="Create alias"))
            expect(page.get_by_role("heading", name="github.com@alice.example")).to_be_visible()

            follow(page.get_by_role("link", name="Aliases", exact=True))
            page.get_by_label("Search address, site or note").fill("github")
            follow(page.get_by_role("button", name="Search"))
            row = page.locator('tr[data-address="github.com@alice.example"]')
            assert row.locator("td.state").inner_text() == "active"
            follow(row.get_by_role("button", name="Disable github.com@alice.example"))
            row = page.locator('tr[data-address="github.com@alice.example"]')
            assert row.locator("td.state").inner_text() == "disabled"
            assert "disabled: github.com@alice.example" in page.locator(".messages").inner_text()
            page.screenshot(path=str(ARTIFACTS / "aliases-list.png"), full_page=True)
        finally:
            browser.close()
    with db.session() as s:
        alias = s.query(Alias).one()
        assert alias.address == "github.com@alice.example"
        assert alias.state == "disabled" and alias.note == "code hosting"
    assert (ARTIFACTS / "aliases-list.png").stat().st_size > 1000
    db.dispose()


def test_change_password_then_sign_out_everywhere(tmp_path):
    db, app = app_with_alice(tmp_path)
    new_password = "a much longer new password"
    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            def sign_in(context, password: str):
                page = context.new_page()
                page.goto(base + "/login")
                page.get_by_label("User name").fill("alice")
                page.get_by_label("Password").fill(password)
                follow(page.get_by_role("button", name="Sign in"))
                return page

            laptop, phone = browser.new_context(), browser.new_context()
            page = sign_in(laptop, PASSWORD)
            page.wait_for_url(base + "/")
            other = sign_in(phone, PASSWORD)
            other.wait_for_url(base + "/")

            follow(page.get_by_role("link", name="alice"))  # the user name opens the account
            expect(page.get_by_role("heading", name="Account")).to_be_visible()
            page.get_by_label("Current password").fill(PASSWORD)
            page.get_by_label("New password", exact=True).fill(new_password)
            page.get_by_label("New password again").fill(new_password)
            follow(page.get_by_role("button", name="Change password"))
            assert "Password changed" in page.locator(".messages").inner_text()
            page.screenshot(path=str(ARTIFACTS / "account.png"), full_page=True)

            other.reload()
            assert "/login" in other.url  # the phone's session ended
            other = sign_in(phone, new_password)
            other.wait_for_url(base + "/")

            follow(page.get_by_role("button", name="Sign out everywhere"))
            page.wait_for_url(base + "/login**")
            expect(page.locator("body")).to_contain_text("Signed out everywhere")
            other.reload()
            assert "/login" in other.url
        finally:
            browser.close()
    assert (ARTIFACTS / "account.png").stat().st_size > 1000
    db.dispose()


def test_pages_load_without_console_errors_and_show_their_icon(tmp_path):
    db, app = app_with_alice(tmp_path)
    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            icons: list[int] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("response", lambda r: icons.append(r.status) if "favicon" in r.url else None)
            page.goto(base + "/login")
            page.get_by_label("User name").fill("alice")
            page.get_by_label("Password").fill(PASSWORD)
            follow(page.get_by_role("button", name="Sign in"))
            page.wait_for_timeout(500)  # the icon loads after the page
            assert errors == [], errors
            page.goto(base + "/no-such-page")  # an error page shows the icon too
            page.wait_for_timeout(500)
        finally:
            browser.close()
    assert len(icons) >= 3 and all(status == 200 for status in icons), icons
    # a client that asks the fixed path gets the same icon
    response = app.test_client().get("/favicon.ico", follow_redirects=True)
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    db.dispose()


def test_sign_in_over_plain_http_at_a_host_name_says_https_is_needed(tmp_path):
    """The session cookie is Secure by default; Chromium keeps it back over plain HTTP at
    a real host name (unlike localhost), so no form can work: the page says why, and a
    reload would not help."""
    db = sqlite_database(str(tmp_path / "aliasd.db"))
    settings = load_settings(environ={}, env="development", secret_key="b" * 32,
                             database_url=db.url, data_dir=str(tmp_path / "data"))
    add_user(db, "alice", domain="alice.example")
    from aliasd.web import create_app

    app = create_app(settings)  # the default: session_cookie_secure
    assert app.config["SESSION_COOKIE_SECURE"]
    with serve(app) as base, sync_playwright() as pw:
        port = base.rsplit(":", 1)[1]
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP aliasd.test 127.0.0.1"])
        try:
            page = browser.new_page()
            page.goto(f"http://aliasd.test:{port}/login")
            page.get_by_label("User name").fill("alice")
            page.get_by_label("Password").fill(PASSWORD)
            follow(page.get_by_role("button", name="Sign in"))
            text = page.locator("main").inner_text()
        finally:
            browser.close()
    assert "HTTPS needed" in text and "only sent over HTTPS" in text
    assert "https://" in text and "ALIASD_SESSION_COOKIE_SECURE=false" in text
    assert "reload the page" not in text
    db.dispose()

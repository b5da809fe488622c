"""Real headless Chromium against the app: on an alias's page, write to someone, see
the address to write to and the contact in the list, disable it, save a reply name.
SQLite (the same views run on both engines in test_contacts_web.py)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import sync_playwright

from aliasd.core import aliases as core
from aliasd.core import reverse_aliases as ra
from tests.harness.browser import follow
from tests.harness.webapp import PASSWORD, serve
from tests.test_web_browser import ARTIFACTS, CHROMIUM_ARGS, app_with_alice

pytestmark = pytest.mark.browser


def test_write_to_someone_and_manage_the_contact(tmp_path):
    db, app = app_with_alice(tmp_path)
    with db.session() as s:
        alias_id = core.create_alias(s, "shop@alice.example", core.get_user(s, "alice")).id
    with serve(app) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(java_script_enabled=False)
            page.goto(base + "/login")
            page.get_by_label("User name").fill("alice")
            page.get_by_label("Password").fill(PASSWORD)
            follow(page.get_by_role("button", name="Sign in"))
            page.wait_for_url(base + "/")
            page.goto(f"{base}/aliases/{alias_id}")

            page.get_by_label("Their address").fill("friend@elsewhere.example")
            page.get_by_label("Their name (optional)").fill("A Friend")
            follow(page.get_by_role("button", name="Make the address to write to"))
            message = page.locator(".messages").inner_text()
            address = re.search(r"Write to (ra-[0-9a-f]+@alice\.example)", message).group(1)
            row = page.locator("#contacts-table tbody tr")
            assert "friend@elsewhere.example" in row.inner_text()
            assert address in row.inner_text()

            follow(page.get_by_role("button", name="Disable contact friend@elsewhere.example"))
            assert "(disabled)" in page.locator("#contacts-table").inner_text()

            page.get_by_label("Your name on mail sent as this alias").fill("Shop Me")
            follow(page.get_by_role("button", name="Save reply settings"))
            assert "Reply settings saved." in page.locator(".messages").inner_text()
            page.screenshot(path=str(ARTIFACTS / "alias-contacts.png"), full_page=True)
        finally:
            browser.close()
    with db.session() as s:
        contact = ra.list_for_alias(s, alias_id)[0]
        assert (contact.address, contact.enabled) == (address, False)
        assert core.get_alias(s, "shop@alice.example").reply_name == "Shop Me"
    db.dispose()

"""Driving Debian's Chromium through Playwright."""

from __future__ import annotations

from playwright.sync_api import Locator


def follow(target: Locator) -> None:
    """Click a link or a form's button and wait until the page it opens has loaded.
    Right after a bare click the old page may still be the one read, and it often holds
    the same elements (the table, the messages box) with the old text."""
    with target.page.expect_navigation():
        target.click()

"""Every main page in real headless Chromium at a desktop width (1280 px) and a phone
width (390 px): no sideways scrolling, the navigation present (error pages included), and
axe-core (npm, installed by scripts/install-deps into .deps/) finds no colour-contrast
problem and no serious or critical accessibility violation. A full-page screenshot of
each page at each width is kept in test-artifacts/layout/."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from flask import Blueprint
from playwright.sync_api import sync_playwright

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.core import events
from aliasd.models import User
from aliasd.web.permissions import login_required
from tests.harness.browser import follow
from tests.harness.databases import sqlite_database
from tests.harness.webapp import PASSWORD, add_user, make_app, serve

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "layout"
AXE = ROOT / ".deps" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}
# Long, unbroken values are what pushed the list past the window before.
LONG_SITE = "account-services.of-an-online-shop-with-a-long-name.example"
LONG_NOTE = ("Signed up for the newsletter and the loyalty programme; the password is in "
             "the manager under shopping, and the account is shared with the family")


def _crash_blueprint() -> Blueprint:
    """A page that fails, to show the 500 page as a signed-in user sees it."""
    bp = Blueprint("crash", __name__)

    @bp.get("/test-crash")
    @login_required
    def crash():
        raise RuntimeError("deliberate failure for the 500 page")

    return bp


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A SQLite database with alice (aliases with long values, mail, spam), root (admin),
    the app on a real HTTP server, and the ids the pages need."""
    tmp = tmp_path_factory.mktemp("layout")
    db = sqlite_database(str(tmp / "aliasd.db"))
    settings = load_settings(environ={}, env="development", secret_key="b" * 32,
                             database_url=db.url, data_dir=str(tmp / "data"),
                             blocklist_reload_command="")
    alice_id = add_user(db, "alice", domain="alice.example")
    add_user(db, "root", admin=True)
    now = dt.datetime.now(dt.UTC)
    with db.session() as s:
        alice = s.get(User, alice_id)
        alice.display_name = "Alice Liddell"
        domain = core.get_domain(s, "alice.example")
        core.update_domain(s, domain, catch_all="create", catch_all_regex=r"[a-z0-9.-]+\.[a-z]{2,}",
                           catch_all_max_per_hour=20)
        core.create_domain(s, "an-unusually-long-domain-name-for-aliases.example", alice)
        long_alias = core.create_alias(s, f"{LONG_SITE}@alice.example", alice, site=LONG_SITE,
                                       note=LONG_NOTE,
                                       destinations=["alice@mailbox.example",
                                                     "a-second-rather-long-address@family.example"])
        for name in ("github.com", "shop.example", "news.example", "forum.example"):
            core.create_alias(s, f"{name}@alice.example", alice, site=name, note=f"{name} account")
        core.set_state(s, core.get_alias(s, "forum.example@alice.example"), "disabled")
        core.set_state(s, core.get_alias(s, "news.example@alice.example"), "burned")
        ids = {"long": long_alias.id, "alice": alice_id}
    for i in range(6):
        with db.session() as s:
            targets = events.find_aliases(s, ["shop.example@alice.example"], "+")
            facts = events.MessageFacts(
                envelope_sender=f"promo{i}@bulk-mailer-with-a-long-name.example",
                from_domain="bulk-mailer-with-a-long-name.example",
                subject=f"Limited offer number {i} for our very best customers only",
                at=now - dt.timedelta(days=i, hours=1))
            outcome = events.AppliedVerdict(score=9.5, action="add header", is_spam=True)
            events.record_message(s, targets, facts, outcome)
    with db.session() as s:
        targets = events.find_aliases(s, [f"{LONG_SITE}@alice.example"], "+")
        events.record_message(s, targets, events.MessageFacts(
            envelope_sender=f"orders@{LONG_SITE}", from_domain=LONG_SITE,
            subject="Your order has shipped", at=now - dt.timedelta(hours=2)),
            events.AppliedVerdict(score=0.1, action="no action", is_spam=False))
    app = make_app(settings)
    app.register_blueprint(_crash_blueprint())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with serve(app) as base:
        yield base, ids
    db.dispose()


def _pages(ids: dict) -> list[tuple[str, str | None, str, int]]:
    """(name, signed-in user, path, expected status)."""
    return [
        ("sign-in", None, "/login", 200),
        ("aliases", "alice", "/", 200),
        ("alias-detail", "alice", f"/aliases/{ids['long']}", 200),
        ("new-alias", "alice", "/aliases/new", 200),
        ("reports", "alice", "/reports/?period=all", 200),
        ("site", "alice", f"/reports/site/{ids['alice']}/shop.example?period=all", 200),
        ("account", "alice", "/settings/account", 200),
        ("tokens", "alice", "/settings/tokens", 200),
        ("admin-aliases", "root", "/", 200),
        ("admin-domains", "root", "/admin/domains", 200),
        ("admin-users", "root", "/admin/users", 200),
        ("admin-user", "root", f"/admin/users/{ids['alice']}", 200),
        ("blocklist", "root", "/blocklist/", 200),
        ("not-found", "alice", "/no/such/page", 404),
        ("not-found-signed-out", None, "/no/such/page", 404),
        ("forbidden", "alice", "/admin/users", 403),
        ("server-error", "alice", "/test-crash", 500),
    ]


def _sign_in(context, base: str, name: str) -> None:
    page = context.new_page()
    page.goto(base + "/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    follow(page.get_by_role("button", name="Sign in"))
    page.wait_for_url(base + "/")
    page.close()


def _axe_problems(page) -> list[str]:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    problems = []
    for violation in result["violations"]:
        if violation["id"] == "color-contrast" or violation["impact"] in ("serious", "critical"):
            targets = [" ".join(node["target"]) for node in violation["nodes"][:5]]
            problems.append(f"{violation['id']} ({violation['impact']}): {violation['help']} "
                            f"at {targets}")
    return problems


@pytest.mark.parametrize("width", list(WIDTHS))
def test_every_main_page_fits_the_screen_and_passes_axe(site, width):
    assert AXE.is_file(), "axe-core is missing: run scripts/install-deps"
    base, ids = site
    w, h = WIDTHS[width]
    failures: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            # bypass_csp lets the test inject axe; the app's own pages run no script.
            contexts = {user: browser.new_context(viewport={"width": w, "height": h},
                                                  bypass_csp=True)
                        for user in (None, "alice", "root")}
            for user in ("alice", "root"):
                _sign_in(contexts[user], base, user)
            for name, user, path, status in _pages(ids):
                page = contexts[user].new_page()
                response = page.goto(base + path)
                assert response.status == status, (name, response.status)
                shot = ARTIFACTS / f"{name}-{w}.png"
                page.screenshot(path=str(shot), full_page=True)
                scroll_width, inner = page.evaluate(
                    "[document.scrollingElement.scrollWidth, window.innerWidth]")
                if scroll_width > inner:
                    failures.append(f"{name} at {w}px scrolls sideways: {scroll_width} > {inner}")
                nav = page.locator("header.top nav")
                if not nav.is_visible() or not nav.get_by_role("link", name="aliasd").is_visible():
                    failures.append(f"{name} at {w}px has no navigation")
                if user is not None and not nav.get_by_role(
                        "link", name="Aliases", exact=True).is_visible():
                    failures.append(f"{name} at {w}px: the signed-in nav is missing")
                failures.extend(f"{name} at {w}px: {p}" for p in _axe_problems(page))
                page.close()
        finally:
            browser.close()
    assert not failures, "\n".join(failures)
    assert (ARTIFACTS / f"aliases-{w}.png").stat().st_size > 1000


def test_alias_list_becomes_cards_on_a_phone(site):
    base, _ids = site
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            layout = {}
            for width, (w, h) in WIDTHS.items():
                context = browser.new_context(viewport={"width": w, "height": h})
                _sign_in(context, base, "alice")
                page = context.new_page()
                page.goto(base + "/")
                row = page.locator('tr[data-address="github.com@alice.example"]')
                layout[width] = page.evaluate(
                    """(row) => ({
                        row: getComputedStyle(row).display,
                        header: document.querySelector('#aliases thead').getBoundingClientRect().height,
                        label: getComputedStyle(row.querySelector('td.state'), '::before').content,
                        width: row.getBoundingClientRect().width,
                    })""", row.element_handle())
                # Every field of the alias is readable and the row's button works.
                assert row.get_by_role("button", name="Disable github.com@alice.example").is_visible()
                context.close()
        finally:
            browser.close()
    assert layout["desktop"]["row"] == "table-row" and layout["desktop"]["header"] > 10
    assert layout["phone"]["row"] == "block"  # a card
    assert layout["phone"]["header"] <= 1  # column headings hidden; each value is labelled
    assert layout["phone"]["label"] == '"State"'
    assert layout["phone"]["width"] <= 390


def test_burn_confirmation_button_is_white_on_dark_red(site):
    base, _ids = site
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844}, bypass_csp=True)
            _sign_in(context, base, "alice")
            page = context.new_page()
            page.goto(base + "/")
            row = page.locator('tr[data-address="shop.example@alice.example"]')
            row.get_by_role("checkbox").check()
            page.get_by_label("With selected aliases").select_option("burn")
            follow(page.get_by_role("button", name="Apply to selected"))
            button = page.get_by_role("button", name="Yes, burn")
            colours = button.evaluate(
                "b => [getComputedStyle(b).color, getComputedStyle(b).backgroundColor]")
            page.screenshot(path=str(ARTIFACTS / "confirm-burn-390.png"), full_page=True)
            assert _axe_problems(page) == []
        finally:
            browser.close()
    assert colours == ["rgb(255, 255, 255)", "rgb(164, 22, 26)"]


# The words (space-separated, shorter than 30 characters) of the elements matched by a
# selector that the browser broke across two lines; with ``dates`` only elements that are
# a date (or a date and a time), not prose that mentions one.
_BROKEN_WORDS = """([selector, dates]) => {
  const broken = [];
  const date = /^\\d{4}-\\d\\d-\\d\\d( \\d\\d:\\d\\d)?$/;
  for (const el of document.querySelectorAll(selector)) {
    if (dates && !date.test(el.textContent.trim())) continue;
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.data.matchAll(/\\S+/g)) {
        if (m[0].length >= 30) continue;
        const range = document.createRange();
        range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
        const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
        if (tops.size > 1) broken.push(m[0]);
      }
    }
  }
  return broken;
}"""


def test_sites_addresses_and_dates_are_not_broken_mid_word(site):
    """A site, an address or a date that fits stays whole at desktop width (the report
    once showed "paypa l.com" and "2026-12- 07" with room to spare), and a date never
    breaks inside itself at either width."""
    base, ids = site
    broken: list[str] = []
    pages = {
        "/reports/?period=all": ("#ranking th a", "#ranking td"),
        "/": ("#aliases td.card-head a", "#aliases td"),
        f"/reports/site/{ids['alice']}/shop.example?period=all": ("#senders th", "#senders td"),
        f"/aliases/{ids['long']}": ("#senders td", "#senders td"),
    }
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            for width, (w, h) in WIDTHS.items():
                context = browser.new_context(viewport={"width": w, "height": h})
                _sign_in(context, base, "root")
                page = context.new_page()
                for path, (names, cells) in pages.items():
                    page.goto(base + path)
                    words = page.evaluate(_BROKEN_WORDS, [cells + ", " + cells + " time", True])
                    if width == "desktop":
                        words += page.evaluate(_BROKEN_WORDS, [names, False])
                    broken += [f"{width} {path}: {word!r}" for word in words]
                context.close()
        finally:
            browser.close()
    assert not broken, "\n".join(broken)

"""The web app through Flask's test client on SQLite and PostgreSQL: sign-in, sign-out,
rate limit, CSRF, escaping, ownership, alias pages and actions, proxy prefix."""

from __future__ import annotations

import datetime as dt
import re
from html.parser import HTMLParser

import pytest
from sqlalchemy import select

from aliasd.config import SettingsError, load_settings
from aliasd.core import aliases as core
from aliasd.models import Alias, MailEvent, User
from aliasd.web import create_app, service
from tests.harness.webapp import (
    PASSWORD,
    add_user,
    csrf_from,
    login,
    make_app,
    page_token,
    signed_in,
)


@pytest.fixture
def app(settings):
    return make_app(settings)


@pytest.fixture
def alice(database):
    return add_user(database, "alice", domain="alice.example")


@pytest.fixture
def bob(database):
    return add_user(database, "bob", domain="bob.example")


def create(client, **fields):
    data = {"variant": "site", "create": "Create alias", **fields}
    data["csrf_token"] = page_token(client, "/aliases/new")
    return client.post("/aliases/new", data=data)


def alias_row(db, address):
    with db.session() as s:
        return s.scalar(select(Alias).where(Alias.address == address))


# --- sign-in -------------------------------------------------------------------------
def test_pages_need_sign_in(app):
    client = app.test_client()
    for path in ("/", "/aliases/new", "/aliases/1", "/settings/tokens"):
        response = client.get(path)
        assert response.status_code == 302
        assert "/login?next=" in response.headers["Location"]


def test_login_logout_and_next(app, alice):
    client = app.test_client()
    page = client.get("/login?next=/settings/tokens")
    token = csrf_from(page.get_data(as_text=True))
    response = client.post("/login?next=/settings/tokens",
                           data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"] == "/settings/tokens"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert client.get("/").status_code == 200
    token = page_token(client, "/")
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302
    assert client.get("/").status_code == 302  # signed out


def test_open_redirect_refused(app, alice):
    client = app.test_client()
    token = csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login?next=//evil.example/x",
                           data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/"


def test_wrong_password_and_rate_limit_per_user_and_client(database, settings, alice):
    app = make_app(settings, login_rate_limit=3, login_rate_limit_per_client=5,
                   login_rate_window=300)
    client = app.test_client()
    for _ in range(3):
        assert login(client, "alice", "wrong").status_code == 401
    # Now even the right password is refused for this user...
    response = login(client, "alice")
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.get_data(as_text=True)
    # ...but others behind the same address (one NAT, one office) still get in...
    add_user(database, "carol")
    assert login(client, "carol").status_code == 302
    # ...until failures from that address under any names reach the looser ceiling.
    for name in ("dave", "erin"):
        assert login(app.test_client(), name, "wrong").status_code == 401
    assert login(app.test_client(), "carol").status_code == 429
    # Another client address may still sign in as carol (different key).
    other = app.test_client()
    response = other.post("/login", environ_base={"REMOTE_ADDR": "192.0.2.9"},
                          data={"username": "carol", "password": PASSWORD,
                                "csrf_token": csrf_from(other.get(
                                    "/login", environ_base={"REMOTE_ADDR": "192.0.2.9"}
                                ).get_data(as_text=True))})
    assert response.status_code == 302


def test_production_refuses_default_or_missing_secret(settings):
    for key in ("change-me", "", "short"):
        with pytest.raises(SettingsError, match="secret_key"):
            create_app(settings.with_overrides(env="production", secret_key=key))
    app = create_app(settings.with_overrides(env="production", secret_key="s" * 32))
    assert app.config["SESSION_COOKIE_SECURE"] is True


def test_secure_cookie_by_default(settings, alice):
    app = create_app(settings)  # session_cookie_secure defaults to True
    client = app.test_client()
    response = login(client, "alice")
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_form_without_its_session_over_plain_http_says_https_is_needed(settings, alice):
    """Only when the Secure session cookie did not come back over HTTP; a form that
    really expired (the cookie came, e.g. on localhost or over HTTPS) says so."""
    app = create_app(settings)
    client = app.test_client()
    login(client, "alice")  # Flask's client sends Secure cookies over HTTP, as on localhost
    response = client.post("/logout", data={"csrf_token": "stale"})
    assert response.status_code == 400 and "Form expired" in response.get_data(as_text=True)
    stranger = app.test_client()  # a browser at http://HOSTNAME keeps the cookie back
    page = stranger.post("/login", data={"username": "alice", "password": "x",
                                         "csrf_token": "x"}).get_data(as_text=True)
    assert "HTTPS needed" in page and "ALIASD_SESSION_COOKIE_SECURE=false" in page
    page = stranger.post("/login", base_url="https://aliasd.example",
                         data={"csrf_token": "x"}).get_data(as_text=True)
    assert "Form expired" in page


# --- CSRF ----------------------------------------------------------------------------
def test_every_form_requires_csrf(app, alice, database):
    client = signed_in(app, "alice")
    with database.session() as s:
        alias = core.create_alias(s, "x.com@alice.example", s.get(User, alice), site="x.com")
        alias_id = alias.id
    anon = app.test_client()
    assert anon.post("/login", data={"username": "alice",
                                     "password": PASSWORD}).status_code == 400
    posts = {
        "/aliases/new": {"site": "github.com", "variant": "site", "create": "1"},
        "/aliases/action": {"one": f"disable:{alias_id}"},
        "/settings/tokens": {"name": "t"},
        "/logout": {},
    }
    # Every POST route outside the token-only API, including ones added later by other
    # blueprints, is covered by walking the URL map.
    for rule in app.url_map.iter_rules():
        if "POST" in (rule.methods or ()) and not rule.rule.startswith("/api/"):
            path = re.sub(r"<[^>]+>", str(alias_id), rule.rule)
            posts.setdefault(path, {})
    assert len(posts) >= 6
    # One-click links from forwarded mail carry no form token (RFC 8058 clients POST
    # without cookies); the signed link is their only permission, and a bad one does nothing.
    oneclick = [p for p in posts if p.startswith("/oneclick/")]
    assert oneclick
    for path in oneclick:
        posts.pop(path)
        response = client.post(path)
        assert response.status_code == 400 and "Nothing was done" in response.get_data(as_text=True)
    for path, data in posts.items():
        response = client.post(path, data=data)
        assert response.status_code == 400, path
        assert "security token" in response.get_data(as_text=True)
    response = client.post("/aliases/action", data={"one": f"disable:{alias_id}",
                                                    "csrf_token": "forged"})
    assert response.status_code == 400
    assert alias_row(database, "x.com@alice.example").state == "active"
    assert alias_row(database, "github.com@alice.example") is None
    assert client.get("/").status_code == 200  # still signed in


# --- creating ------------------------------------------------------------------------
def test_create_from_url_proposes_site_address(app, alice, database):
    client = signed_in(app, "alice")
    data = {"site": "https://www.GitHub.com/login", "variant": "site", "domain": "alice.example",
            "preview": "Propose address", "csrf_token": page_token(client, "/aliases/new")}
    response = client.post("/aliases/new", data=data)
    html = response.get_data(as_text=True)
    assert "Proposed address: <strong>github.com@alice.example</strong>" in html
    assert alias_row(database, "github.com@alice.example") is None  # a proposal only
    response = create(client, site="https://www.GitHub.com/login", note="my <b>note</b>",
                      destinations="second@other.example\n")
    assert response.status_code == 302
    alias = alias_row(database, "github.com@alice.example")
    assert alias.site == "github.com" and alias.origin == "web"
    assert alias.destination_list == ["second@other.example"]
    assert alias.note == "my <b>note</b>"
    detail = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "my &lt;b&gt;note&lt;/b&gt;" in detail
    # default destination is the user's mailbox
    create(client, site="gitlab.com")
    assert alias_row(database, "gitlab.com@alice.example").destinations == "alice@mailbox.example"


def test_random_variant(app, alice, database):
    client = signed_in(app, "alice")
    response = create(client, site="github.com", variant="random")
    assert response.status_code == 302
    with database.session() as s:
        addresses = list(s.scalars(select(Alias.address)))
    assert len(addresses) == 1
    assert re.fullmatch(r"github\.com\.[a-z0-9]{5}@alice\.example", addresses[0])


def test_clear_errors_duplicate_burned_bad_site(app, alice, database):
    client = signed_in(app, "alice")
    assert create(client, site="github.com").status_code == 302
    response = create(client, site="github.com")
    assert response.status_code == 422
    assert "github.com@alice.example already exists" in response.get_data(as_text=True)
    with database.session() as s:
        core.set_state(s, core.get_alias(s, "github.com@alice.example"), "burned")
    response = create(client, site="github.com")
    assert "was burned and is never handed out again" in response.get_data(as_text=True)
    response = create(client, site="not a site")
    assert response.status_code == 422
    assert "is not a web address or host name" in response.get_data(as_text=True) or \
        "without spaces" in response.get_data(as_text=True)
    response = create(client, site="ok.com", domain="bob.example")
    assert response.status_code == 422
    assert "bob.example is not one of your domains" in response.get_data(as_text=True)


def test_xss_in_site_and_note_is_escaped(app, alice, database):
    client = signed_in(app, "alice")
    evil = "<script>alert(1)</script>"
    response = create(client, site=evil)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert evil not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    response = create(client, site="evil.com", note=evil)
    assert response.status_code == 302
    for path in ("/", response.headers["Location"], "/?q=%3Cscript%3E"):
        html = client.get(path).get_data(as_text=True)
        assert evil not in html, path
        assert "&lt;script&gt;" in html, path
    assert "default-src 'self'" in client.get("/").headers["Content-Security-Policy"]


def test_user_without_domain_gets_clear_message(app, database):
    add_user(database, "nodomain")
    client = signed_in(app, "nodomain")
    for path in ("/", "/aliases/new"):
        html = client.get(path).get_data(as_text=True)
        assert "You own no domain yet" in html


# --- ownership -----------------------------------------------------------------------
def test_user_cannot_read_or_change_other_users_aliases(app, alice, bob, database):
    with database.session() as s:
        theirs = core.create_alias(s, "secret.com@bob.example", s.get(User, bob),
                                   site="secret.com", note="bob's secret note")
        theirs_id = theirs.id
    client = signed_in(app, "alice")
    assert "secret.com@bob.example" not in client.get("/").get_data(as_text=True)
    assert "secret.com@bob.example" not in client.get("/?q=secret").get_data(as_text=True)
    assert client.get(f"/aliases/{theirs_id}").status_code == 404
    token = page_token(client, "/")
    for action in ("disable", "burn", "delete", "forget"):
        response = client.post("/aliases/action", data={"one": f"{action}:{theirs_id}",
                                                        "confirm": "yes", "csrf_token": token})
        assert response.status_code == 404
        response = client.post("/aliases/action", data={"action": action, "ids": [theirs_id],
                                                        "confirm": "yes", "csrf_token": token})
        assert response.status_code == 404
    assert alias_row(database, "secret.com@bob.example").state == "active"
    # alice cannot create on bob's domain either (domain not offered; forced value refused)
    assert create(client, site="x.com", domain="bob.example").status_code == 422
    assert alias_row(database, "x.com@bob.example") is None


def test_admin_sees_and_changes_all(app, alice, bob, database):
    add_user(database, "root", admin=True)
    with database.session() as s:
        alias_id = core.create_alias(s, "a.com@bob.example", s.get(User, bob), site="a.com").id
    client = signed_in(app, "root")
    html = client.get("/").get_data(as_text=True)
    assert "a.com@bob.example" in html and "bob" in html
    assert client.get(f"/aliases/{alias_id}").status_code == 200
    response = client.post("/aliases/action", data={"one": f"disable:{alias_id}",
                                                    "csrf_token": page_token(client)})
    assert response.status_code == 302
    assert alias_row(database, "a.com@bob.example").state == "disabled"


# --- lifecycle -------------------------------------------------------------------------
def test_disable_enable_burn_delete_forget(app, alice, database):
    client = signed_in(app, "alice")
    with database.session() as s:
        user = s.get(User, alice)
        ids = [core.create_alias(s, f"s{i}.com@alice.example", user, site=f"s{i}.com").id
               for i in range(4)]

    def act(**data):
        data["csrf_token"] = page_token(client)
        return client.post("/aliases/action", data=data)

    act(one=f"disable:{ids[0]}")
    assert alias_row(database, "s0.com@alice.example").state == "disabled"
    act(one=f"enable:{ids[0]}")
    assert alias_row(database, "s0.com@alice.example").state == "active"
    # burn asks first
    response = act(one=f"burn:{ids[1]}")
    assert response.status_code == 200 and "cannot be undone" in response.get_data(as_text=True)
    assert alias_row(database, "s1.com@alice.example").state == "active"
    act(action="burn", ids=[ids[1]], confirm="yes")
    assert alias_row(database, "s1.com@alice.example").state == "burned"
    # bulk disable, then delete keeps a tombstone hidden from the list
    act(action="disable", ids=[ids[2], ids[3]])
    assert alias_row(database, "s2.com@alice.example").state == "disabled"
    assert alias_row(database, "s3.com@alice.example").state == "disabled"
    # delete asks first too, and says the tombstone keeps the address
    response = act(action="delete", ids=[ids[2]])
    assert response.status_code == 200 and "tombstone" in response.get_data(as_text=True)
    assert alias_row(database, "s2.com@alice.example").state == "disabled"
    act(action="delete", ids=[ids[2]], confirm="yes")
    assert alias_row(database, "s2.com@alice.example").state == "deleted"
    assert 'data-address="s2.com@alice.example"' not in client.get("/").get_data(as_text=True)
    assert 'data-address="s2.com@alice.example"' in client.get(
        "/?state=deleted").get_data(as_text=True)
    assert create(client, site="s2.com").status_code == 422  # tombstone holds the address
    # forget, confirmed, releases it
    response = act(action="forget", ids=[ids[2]])
    assert "can be created again" in response.get_data(as_text=True)
    assert alias_row(database, "s2.com@alice.example") is not None
    act(action="forget", ids=[ids[2]], confirm="yes")
    assert alias_row(database, "s2.com@alice.example") is None
    assert create(client, site="s2.com").status_code == 302
    # a burned alias is not forgotten (that would bring the address back)
    detail = client.get(f"/aliases/{ids[1]}").get_data(as_text=True)
    assert f"forget:{ids[1]}" not in detail
    act(action="forget", ids=[ids[1]], confirm="yes")
    assert alias_row(database, "s1.com@alice.example").state == "burned"
    assert "stays retired" in client.get("/").get_data(as_text=True)
    # an impossible transition is reported, not a crash
    response = act(one=f"enable:{ids[1]}")
    assert response.status_code == 302
    assert "cannot become" in client.get("/").get_data(as_text=True)
    # an empty bulk selection is a clear message
    act(action="disable")
    assert "Select at least one alias" in client.get("/").get_data(as_text=True)


def test_a_burned_alias_is_never_released_from_the_web_app(app, alice, database):
    """Burning promises the address never comes back; only an administrator's
    'aliasd alias forget' releases it. Deleting it first is no way around that: a
    deleted alias can be forgotten, so a burned one is not deleted here."""
    client = signed_in(app, "alice")
    with database.session() as s:
        alias = core.create_alias(s, "leaky.com@alice.example", s.get(User, alice),
                                  site="leaky.com")
        alias_id = alias.id

    def act(**data):
        data["csrf_token"] = page_token(client)
        return client.post("/aliases/action", data=data)

    act(one=f"burn:{alias_id}", confirm="yes")
    assert alias_row(database, "leaky.com@alice.example").state == "burned"
    detail = client.get(f"/aliases/{alias_id}").get_data(as_text=True)
    assert f"delete:{alias_id}" not in detail and f"forget:{alias_id}" not in detail
    act(action="delete", ids=[alias_id], confirm="yes")
    assert "stays retired" in client.get("/").get_data(as_text=True)
    act(action="forget", ids=[alias_id], confirm="yes")
    assert alias_row(database, "leaky.com@alice.example").state == "burned"
    assert create(client, site="leaky.com").status_code == 422


def test_detail_shows_messages_and_sender_domains(app, alice, database):
    with database.session() as s:
        alias = core.create_alias(s, "shop.com@alice.example", s.get(User, alice), site="shop.com")
        alias.forwarded_count, alias.spam_count = 2, 1
        alias.last_mail_at = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
        s.flush()
        for sender, spam in (("news@shop.com", False), ("x@spammer.example", True),
                             ("y@shop.com", False)):
            s.add(MailEvent(alias_id=alias.id, owner_id=alice, alias_address=alias.address,
                            envelope_sender=sender, sender_domain=sender.split("@")[1],
                            from_domain=sender.split("@")[1], action="reject" if spam else
                            "no action", is_spam=spam, score=20.0 if spam else 0.0))
        alias_id = alias.id
    client = signed_in(app, "alice")
    html = client.get(f"/aliases/{alias_id}").get_data(as_text=True)
    assert "x@spammer.example" in html and "news@shop.com" in html
    senders = html.split('id="senders"')[1]
    assert re.search(r"<td>shop\.com</td><td class=\"num\">2</td><td class=\"num\">0</td>",
                     senders)
    assert re.search(r"<td>spammer\.example</td><td class=\"num\">1</td><td class=\"num\">1</td>",
                     senders)
    listing = client.get("/").get_data(as_text=True)
    assert "2026-01-02 03:04" in re.sub(r"<[^>]+>", "", listing)  # as shown


# --- list: search, sort, pages ---------------------------------------------------------
def test_list_search_sort_and_pages(app, alice, database):
    with database.session() as s:
        user = s.get(User, alice)
        base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
        for i in range(120):
            a = core.create_alias(s, f"site{i:03d}.com@alice.example", user, site=f"site{i:03d}.com",
                                  note="special_note" if i == 7 else None)
            a.created_at = base + dt.timedelta(minutes=i)
            a.spam_count = i % 10
            a.last_mail_at = base + dt.timedelta(hours=i) if i % 2 else None
    client = signed_in(app, "alice")

    def addresses(html):
        return re.findall(r'data-address="([^"]+)"', html)

    first = client.get("/").get_data(as_text=True)
    got = addresses(first)
    assert len(got) == 50 and got[0] == "site119.com@alice.example"
    assert "120 aliases" in first
    seen = list(got)
    html = first
    while 'rel="next"' in html:
        nxt = re.search(r'rel="next" href="([^"]+)"', html).group(1).replace("&amp;", "&")
        html = client.get(nxt).get_data(as_text=True)
        seen += addresses(html)
    assert seen == [f"site{i:03d}.com@alice.example" for i in range(119, -1, -1)]
    last = addresses(client.get("/?last=1").get_data(as_text=True))
    assert last == [f"site{i:03d}.com@alice.example" for i in range(49, -1, -1)]
    # back from the last page
    html = client.get("/?last=1").get_data(as_text=True)
    prev = re.search(r'rel="prev" href="([^"]+)"', html).group(1).replace("&amp;", "&")
    assert addresses(client.get(prev).get_data(as_text=True))[0] == "site099.com@alice.example"
    # search address, site and note (case-insensitive); LIKE wildcards are literal
    assert addresses(client.get("/?q=SITE011").get_data(as_text=True)) == [
        "site011.com@alice.example"]
    assert addresses(client.get("/?q=special_note").get_data(as_text=True)) == [
        "site007.com@alice.example"]
    assert addresses(client.get("/?q=%25").get_data(as_text=True)) == []
    # sort by spam, then by last mail (never-mailed last)
    by_spam = addresses(client.get("/?sort=spam").get_data(as_text=True))
    assert by_spam[0] == "site119.com@alice.example"  # spam 9, newest id
    assert by_spam[:12] == [f"site{i:03d}.com@alice.example" for i in range(119, 0, -10)]
    by_mail = addresses(client.get("/?sort=last_mail").get_data(as_text=True))
    assert by_mail[0] == "site119.com@alice.example" and by_mail[1] == "site117.com@alice.example"
    html = client.get("/?sort=last_mail&last=1").get_data(as_text=True)
    assert addresses(html)[-1] == "site000.com@alice.example"
    assert client.get("/?after=garbage&sort=spam").status_code == 200


# --- reverse proxy ---------------------------------------------------------------------
def test_proxy_prefix_links_and_redirects(database, settings, alice):
    app = make_app(settings, proxy_fix_hops=1)
    client = app.test_client()
    headers = {"X-Forwarded-Prefix": "/aliasd", "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "mail.example.org", "X-Forwarded-For": "198.51.100.7"}
    response = client.get("/", headers=headers)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/aliasd/login?next=")
    page = client.get("/login", headers=headers).get_data(as_text=True)
    assert 'href="/aliasd/static/style.css"' in page
    token = csrf_from(page)
    response = client.post("/login?next=/settings/tokens", headers=headers,
                           data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.headers["Location"] == "/aliasd/settings/tokens"
    html = client.get("/", headers=headers).get_data(as_text=True)
    assert 'action="/aliasd/logout"' in html and 'href="/aliasd/aliases/new"' in html
    # failed sign-ins are keyed by the forwarded client address, not the proxy's
    fresh = app.test_client()
    token = csrf_from(fresh.get("/login", headers=headers).get_data(as_text=True))
    fresh.post("/login", headers=headers, data={"username": "alice", "password": "bad",
                                                "csrf_token": token})
    from aliasd.models import LoginAttempt

    with database.session() as s:
        keys = set(s.scalars(select(LoginAttempt.key)))
    assert keys == {"ip:198.51.100.7", "user:alice"}


def test_without_trusted_hops_forwarded_headers_are_ignored(app, alice):
    response = app.test_client().get("/", headers={"X-Forwarded-Prefix": "/evil"})
    assert response.headers["Location"].startswith("/login")


def test_database_down_is_503_not_a_crash():
    broken = load_settings(environ={}, env="development", secret_key="x" * 20,
                           database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
                           session_cookie_secure=False, db_timeout=1.0)
    app = create_app(broken)
    client = app.test_client()
    client.set_cookie("aliasd_session", "x")
    response = client.get("/login")
    assert response.status_code in (200, 503)
    token = csrf_from(response.get_data(as_text=True))
    response = client.post("/login", data={"username": "a", "password": "b", "csrf_token": token})
    assert response.status_code == 503
    assert "database cannot be reached" in response.get_data(as_text=True)


def test_search_with_many_matches_pages_through_all(database, alice):
    """Above service.DENSE_MATCHES the search walks the index instead of collecting ids."""
    from sqlalchemy import insert

    from aliasd.web import service

    n = service.DENSE_MATCHES + 60
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    with database.session() as s:
        domain_id = core.get_domain(s, "alice.example").id
        rows = [{"address": f"shop{i:05d}.com@alice.example", "domain_id": domain_id,
                 "owner_id": alice, "site": f"shop{i:05d}.com", "destinations": "a@b.example",
                 "state": "active", "origin": "web", "created_at": base + dt.timedelta(seconds=i),
                 "updated_at": base, "forwarded_count": 0, "spam_count": i % 3,
                 "rejected_count": 0} for i in range(n)]
        rows.append({**rows[0], "address": "other.com@alice.example", "site": "other.com"})
        s.execute(insert(Alias), rows)
    with database.session() as s:
        user = s.get(User, alice)
        page = service.list_aliases(s, user, search="shop")
        assert page.total == n
        assert page.items[0].address == f"shop{n - 1:05d}.com@alice.example"
        seen = [a.address for a in page.items]
        while page.older:
            page = service.list_aliases(s, user, search="shop", after=page.older)
            seen += [a.address for a in page.items]
        assert seen == [f"shop{i:05d}.com@alice.example" for i in range(n - 1, -1, -1)]
        last = service.list_aliases(s, user, search="shop", last=True)
        assert last.items[-1].address == "shop00000.com@alice.example"
        by_spam = service.list_aliases(s, user, search="shop", sort="spam")
        assert {a.spam_count for a in by_spam.items} == {2}
        assert service.list_aliases(s, user, search="other").total == 1


def test_edit_note_and_destinations(app, alice, bob, database):
    with database.session() as s:
        alias_id = core.create_alias(s, "n.com@alice.example", s.get(User, alice), site="n.com").id
    client = signed_in(app, "alice")
    page = client.get(f"/aliases/{alias_id}").get_data(as_text=True)
    token = csrf_from(page)
    response = client.post(f"/aliases/{alias_id}", data={
        "note": "<i>x</i>", "destinations": "one@x.example\nTWO@x.example\n", "csrf_token": token})
    assert response.status_code == 302
    alias = alias_row(database, "n.com@alice.example")
    assert alias.destination_list == ["one@x.example", "two@x.example"]
    assert alias.note == "<i>x</i>"
    response = client.post(f"/aliases/{alias_id}", data={
        "note": "", "destinations": "not an address", "csrf_token": token})
    assert response.status_code == 422 and "not an address" in response.get_data(as_text=True)
    assert alias_row(database, "n.com@alice.example").destination_list == [
        "one@x.example", "two@x.example"]
    assert client.post(f"/aliases/{alias_id}", data={"note": "x"}).status_code == 400  # CSRF
    # bob cannot edit alice's alias
    other = signed_in(app, "bob")
    response = other.post(f"/aliases/{alias_id}", data={
        "note": "pwned", "destinations": "bob@evil.example",
        "csrf_token": page_token(other, "/")})
    assert response.status_code == 404
    assert alias_row(database, "n.com@alice.example").note == "<i>x</i>"


class _FormAudit(HTMLParser):
    """Collects controls, labels and headings of a page."""

    def __init__(self):
        super().__init__()
        self.controls, self.labels, self.h1 = [], set(), 0
        self.external = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "label" and a.get("for"):
            self.labels.add(a["for"])
        if tag == "h1":
            self.h1 += 1
        if tag in ("input", "select", "textarea") and a.get("type") not in (
                "hidden", "submit", "button"):
            self.controls.append(a)
        for attr in ("src", "href"):
            if (a.get(attr) or "").startswith(("http://", "https://", "//")):
                self.external.append(a[attr])


def test_pages_are_labelled_and_self_contained(app, alice, database):
    with database.session() as s:
        alias_id = core.create_alias(s, "l.com@alice.example", s.get(User, alice), site="l.com").id
    anon = app.test_client()
    client = signed_in(app, "alice")
    pages = {"/login": anon, "/": client, "/aliases/new": client,
             f"/aliases/{alias_id}": client, "/settings/tokens": client}
    for path, c in pages.items():
        audit = _FormAudit()
        audit.feed(c.get(path).get_data(as_text=True))
        assert audit.h1 == 1, path
        assert audit.controls, path
        for control in audit.controls:
            assert control.get("id") in audit.labels or control.get("aria-label"), (path, control)
        assert not audit.external, (path, audit.external)  # no assets from other hosts
    # a form sent back with an error puts the focus on the field in error
    html = create(client, site="bad site").get_data(as_text=True)
    assert re.search(r'<input[^>]*aria-invalid="true"[^>]*autofocus|<input[^>]*autofocus[^>]*'
                     r'aria-invalid="true"', html)


def test_alias_list_and_page_link_to_the_sites_report(app, alice, bob, database):
    """Even for a site with no mail yet: its page shows the alias, no 404."""
    client = signed_in(app, "alice")
    create(client, site="https://shop.example/signup")
    with database.session() as s:
        shop = core.get_alias(s, "shop.example@alice.example")
        owner = shop.owner_id
        core.create_alias(s, "nosite@alice.example", shop.owner)
    site_url = f"/reports/site/{owner}/shop.example"
    listing = client.get("/").get_data(as_text=True)
    assert f'href="{site_url}"' in listing
    assert listing.count('href="/reports/site/') == 1  # the alias without a site has none
    detail = client.get(f"/aliases/{shop.id}").get_data(as_text=True)
    assert f'href="{site_url}"' in detail
    for period in ("7d", "30d", "all"):
        page = client.get(f"{site_url}?period={period}")
        assert page.status_code == 200, period
        assert "shop.example@alice.example" in page.get_data(as_text=True)
    assert signed_in(app, "bob").get(site_url).status_code == 404  # still alice's alone


def test_search_box_stops_where_the_server_cuts_a_search(app, alice, database):
    with database.session() as s:
        core.create_alias(s, "shop.example@alice.example", s.get(User, alice), site="shop.example")
    client = signed_in(app, "alice")
    page = client.get("/").get_data(as_text=True)
    # gunicorn refuses a request line past 4 kB with a bare 414 page: the browser never
    # sends a search that long, and what it sends is all the server reads
    assert f'name="q" type="search" maxlength="{service.MAX_SEARCH}"' in page
    assert service.MAX_SEARCH * 12 < 4000  # a character percent-encoded: at most 12 bytes
    long_search = "shop" + "x" * (service.MAX_SEARCH * 2)
    assert client.get("/", query_string={"q": long_search}).status_code == 200

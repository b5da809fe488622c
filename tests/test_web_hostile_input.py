"""Hostile input to the web app and the API (SQLite and PostgreSQL): ids too big for the
database, cursors and page sizes that do not parse, NUL bytes. Each gets a clear 4xx
(or, for a cursor, the first page), never a 500 or a "database unavailable" 503, and
nothing is stored."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aliasd.core import tokens
from aliasd.models import Alias, ApiToken, User
from tests.harness.webapp import add_user, csrf_from, login, make_app, page_token

BIG = "9" * 25  # beyond any integer column (SQLite: OverflowError)
INT4 = str(2**31)  # beyond PostgreSQL's integer (int4) columns


@pytest.fixture
def app(settings):
    return make_app(settings)


@pytest.fixture
def alice(database) -> str:
    """alice (own domain, one alias), plus an API token for her; returns the token."""
    add_user(database, "alice", domain="alice.example")
    with database.session() as s:
        user = s.scalar(select(User).where(User.username == "alice"))
        _row, plain = tokens.create_token(s, user, "probe")
    return plain


def client_for(app, name="alice"):
    client = app.test_client()
    assert login(client, name).status_code == 302
    return client


def make_alias(client, site="shop.example") -> int:
    data = {"variant": "site", "create": "1", "site": site,
            "csrf_token": page_token(client, "/aliases/new")}
    response = client.post("/aliases/new", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)
    return int(response.headers["Location"].rsplit("/", 1)[1])


def test_ids_beyond_the_database_range_are_404(app, alice):
    client = client_for(app)
    token = page_token(client, "/")
    api = {"Authentication": alice}
    for big in (BIG, INT4):
        assert client.get(f"/aliases/{big}").status_code == 404
        assert client.post(f"/settings/tokens/{big}/revoke",
                           data={"csrf_token": token}).status_code == 404
        assert client.post(f"/blocklist/{big}/toggle",
                           data={"csrf_token": token}).status_code == 404
        assert client.get(f"/api/aliases/{big}", headers=api).status_code == 404
        assert client.post(f"/api/aliases/{big}/disable", headers=api).status_code == 404
        # single and bulk actions name the ids in the form
        for data in ({"one": f"disable:{big}"}, {"action": "disable", "ids": [big]},
                     {"action": "delete", "ids": [f"-{big}"]}):
            response = client.post("/aliases/action", data={"csrf_token": token, **data})
            assert response.status_code == 404, (big, data)


def test_hostile_cursors_give_the_first_page(app, alice, database):
    client = client_for(app)
    alias_id = make_alias(client)
    api = {"Authentication": alice}
    for query in (f"sort=spam&after={BIG}~1", f"sort=spam&before=-{BIG}~1",
                  f"after=2020-01-01T00:00:00~-{BIG}", f"sort=spam&after=0~{INT4}",
                  f"sort=last_mail&before=2020-01-01~{BIG}"):
        page = client.get(f"/?{query}")
        assert page.status_code == 200, query
        assert f'value="{alias_id}"' in page.get_data(as_text=True), query
        listed = client.get(f"/api/aliases?{query}", headers=api)
        assert listed.status_code == 200, query
        assert [a["id"] for a in listed.get_json()["aliases"]] == [alias_id], query


def test_api_page_size_that_is_not_a_plain_number(app, alice):
    client = app.test_client()
    api = {"Authentication": alice}
    # "²" and "٣" pass str.isdigit(); the first is no int() at all, and 5000 digits
    # exceed Python's int() limit.
    for limit in ("²", "9" * 5000, "-3", "abc"):
        response = client.get(f"/api/aliases?limit={limit}", headers=api)
        assert response.status_code == 200, limit
        assert response.get_json()["aliases"] == []


def test_nul_bytes_are_refused_and_nothing_is_stored(app, alice, database):
    client = client_for(app)
    alias_id = make_alias(client)
    token = page_token(client, "/")
    api = {"Authentication": alice}

    assert client.get("/?q=a%00b").status_code == 400
    assert client.get("/reports/site/1/a%00b").status_code == 400
    response = client.post(f"/aliases/{alias_id}",
                           data={"csrf_token": token, "note": "a\x00b", "save": "Save"})
    assert response.status_code == 400
    response = client.post("/aliases/new", data={
        "csrf_token": token, "variant": "site", "create": "1", "site": "nul.example",
        "note": "a\x00b"})
    assert response.status_code == 400
    response = client.post("/settings/tokens", data={"csrf_token": token, "name": "a\x00b"})
    assert response.status_code == 400
    assert client.get("/api/aliases?q=%00", headers=api).status_code == 400
    response = client.post("/api/aliases", json={"site": "nul2.example", "note": "x\x00"},
                           headers=api)
    assert response.status_code == 400 and "error" in response.get_json()
    response = client.post("/api/alias/random/new?hostname=nul3.example",
                           json={"note": "\x00"}, headers=api)
    assert response.status_code == 400
    assert client.post("/api/alias/random/new?hostname=a%00b",
                       headers=api).status_code == 400

    anonymous = app.test_client()
    login_token = csrf_from(anonymous.get("/login").get_data(as_text=True))
    response = anonymous.post("/login", data={"csrf_token": login_token,
                                              "username": "ali\x00ce", "password": "x"})
    assert response.status_code == 400

    with database.session() as s:
        assert s.scalar(select(Alias.note).where(Alias.id == alias_id)) is None
        sites = set(s.scalars(select(Alias.site)))
        assert sites == {"shop.example"}
        assert s.scalars(select(ApiToken.name)).all() == ["probe"]
    # the session is still usable afterwards
    assert client.get(f"/aliases/{alias_id}").status_code == 200


def test_admin_report_scope_with_nul_is_400(app, database):
    add_user(database, "root", admin=True)
    client = client_for(app, "root")
    assert client.get("/reports/?user=a%00b").status_code == 400
    assert client.get("/reports/export.csv?user=a%00b").status_code == 400


def test_a_failed_write_still_gets_its_error_page(app, alice, database):
    """A write the database refuses mid-request (here a duplicate user name; in life a
    race between two requests) answers with the error page, not a crash while
    rendering it from a session that needs a rollback."""
    from aliasd.web.context import db_session
    from aliasd.web.permissions import current_user, login_required

    @login_required
    def clash():
        s = db_session()
        me = current_user()
        s.add(User(username=me.username, mailbox=me.mailbox))
        s.flush()
        return "unreachable"

    app.add_url_rule("/clash", "clash", clash)
    client = client_for(app)
    response = client.get("/clash")
    assert response.status_code == 503
    assert "alice" in response.get_data(as_text=True)  # the page still knows who you are
    assert client.get("/").status_code == 200


def test_control_characters_in_redirect_targets(app, alice, database):
    """A ``next`` (sign-in) or ``back`` (alias actions) with CR/LF or tabs is not a
    header to inject nor a crash: the default page instead."""
    for target in ("/%0d%0aX-Evil:%201", "/%0a/evil.example", "/%09/evil.example"):
        client = app.test_client()
        token = csrf_from(client.get("/login").get_data(as_text=True))
        response = client.post(f"/login?next={target}", data={
            "username": "alice", "password": "correct horse battery", "csrf_token": token})
        assert response.status_code == 302, target
        assert response.headers["Location"] == "/"
        assert "X-Evil" not in response.headers
    client = client_for(app)
    alias_id = make_alias(client)
    token = page_token(client, "/")
    for back in ("/\r\nX-Evil: 1", "/\t/evil.example"):
        response = client.post("/aliases/action", data={
            "csrf_token": token, "one": f"disable:{alias_id}", "back": back})
        assert response.status_code == 302, back
        assert response.headers["Location"] == "/"
        assert "X-Evil" not in response.headers


def test_page_showing_a_new_token_is_not_stored_by_caches(app, alice):
    client = client_for(app)
    response = client.post("/settings/tokens", data={
        "name": "laptop", "csrf_token": page_token(client, "/settings/tokens")})
    assert response.status_code == 200 and 'id="new-token"' in response.get_data(as_text=True)
    assert "no-store" in response.headers.get("Cache-Control", "")


def test_only_an_explicit_development_env_skips_the_secret_check(settings):
    """A typo or variant of "production" must not fail open to the default key, with
    which anyone can sign a session cookie for any user id."""
    from aliasd.config import SettingsError
    from aliasd.web import create_app

    for env in ("prod", "Production", "producton", ""):
        with pytest.raises(SettingsError, match="secret_key"):
            create_app(settings.with_overrides(env=env, secret_key="change-me"))
    create_app(settings.with_overrides(env="development", secret_key="change-me"))


def test_rate_limit_holds_across_name_variants_and_spoofed_forwarding(database, settings):
    """Case and space variants of a name share one counter; with proxy_fix_hops=0 an
    X-Forwarded-For header does not give an attacker a fresh client address."""
    add_user(database, "alice")
    add_user(database, "carol")
    app = make_app(settings, login_rate_limit=3, login_rate_limit_per_client=3,
                   login_rate_window=300, proxy_fix_hops=0)

    def attempt(name, password, addr, forwarded=None):
        client = app.test_client()
        env = {"REMOTE_ADDR": addr}
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        token = csrf_from(client.get("/login", environ_base=env).get_data(as_text=True))
        return client.post("/login", environ_base=env, headers=headers, data={
            "username": name, "password": password, "csrf_token": token}).status_code

    for i, name in enumerate(("Alice", " ALICE ", "aLiCe")):
        assert attempt(name, "wrong", f"192.0.2.{i + 1}") == 401
    assert attempt("alice", "correct horse battery", "192.0.2.50") == 429
    for i in range(3):
        assert attempt(f"nobody{i}", "wrong", "198.51.100.1", f"203.0.113.{i}") == 401
    assert attempt("carol", "correct horse battery", "198.51.100.1", "203.0.113.99") == 429
    assert attempt("carol", "correct horse battery", "198.51.100.2") == 302

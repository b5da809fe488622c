"""The JSON API with per-user tokens (SQLite and PostgreSQL): tokens created in the
settings page, shown once and stored hashed; list/create/disable/enable/burn; JSON
errors; ownership; SimpleLogin's POST /api/alias/random/new."""

from __future__ import annotations

import hashlib
import re

import pytest
from sqlalchemy import select

from aliasd.core import aliases as core
from aliasd.models import Alias, ApiToken, User
from tests.harness.webapp import add_user, login, make_app, page_token


@pytest.fixture
def app(settings):
    return make_app(settings)


def new_token(app, name: str) -> str:
    client = app.test_client()
    assert login(client, name).status_code == 302
    response = client.post("/settings/tokens", data={
        "name": "password manager", "csrf_token": page_token(client, "/settings/tokens")})
    html = response.get_data(as_text=True)
    token = re.search(r'id="new-token">([^<]+)<', html).group(1)
    # shown once: the next page view does not show it again
    assert token not in client.get("/settings/tokens").get_data(as_text=True)
    return token


@pytest.fixture
def users(database):
    add_user(database, "alice", domain="alice.example")
    add_user(database, "bob", domain="bob.example")


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_token_is_stored_hashed_and_revocable(app, users, database):
    token = new_token(app, "alice")
    with database.session() as s:
        row = s.scalar(select(ApiToken))
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in (row.token_hash, row.prefix)
        token_id = row.id
    client = app.test_client()
    assert client.get("/api/aliases", headers=auth(token)).status_code == 200
    web = app.test_client()
    login(web, "alice")
    web.post(f"/settings/tokens/{token_id}/revoke",
             data={"csrf_token": page_token(web, "/settings/tokens")})
    response = client.get("/api/aliases", headers=auth(token))
    assert response.status_code == 401
    assert response.is_json and "token" in response.get_json()["error"]


def test_bob_cannot_revoke_alices_token(app, users, database):
    new_token(app, "alice")
    with database.session() as s:
        token_id = s.scalar(select(ApiToken.id))
    web = app.test_client()
    login(web, "bob")
    web.post(f"/settings/tokens/{token_id}/revoke",
             data={"csrf_token": page_token(web, "/settings/tokens")})
    with database.session() as s:
        assert s.get(ApiToken, token_id) is not None


def test_no_or_bad_token_is_json_401_and_cookies_do_not_count(app, users):
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authentication": "nope"},
                    {"Authorization": "Basic YTpi"}):
        response = client.get("/api/aliases", headers=headers)
        assert response.status_code == 401
        assert response.get_json()["status"] == 401
    # a signed-in browser session is not an API credential (so no CSRF hole)
    assert login(client, "alice").status_code == 302
    assert client.post("/api/aliases", json={"site": "x.com"}).status_code == 401
    assert client.get("/api/nothing-here").get_json()["status"] == 404


def test_create_list_and_transitions(app, users, database):
    token = new_token(app, "alice")
    client = app.test_client()
    response = client.post("/api/aliases", headers=auth(token),
                           json={"site": "https://www.Example-Shop.com/cart", "note": "shoes"})
    assert response.status_code == 201
    created = response.get_json()
    assert created["address"] == "example-shop.com@alice.example"
    assert created["destinations"] == ["alice@mailbox.example"]
    assert created["state"] == "active" and created["note"] == "shoes"
    with database.session() as s:
        assert s.scalar(select(Alias.origin)) == "api"
    response = client.post("/api/aliases", headers=auth(token),
                           json={"site": "github.com", "random": True,
                                 "destinations": ["a@x.example", "b@x.example"]})
    assert response.status_code == 201
    assert re.fullmatch(r"github\.com\.[a-z0-9]{5}@alice\.example", response.get_json()["address"])
    assert response.get_json()["destinations"] == ["a@x.example", "b@x.example"]
    listing = client.get("/api/aliases?q=shop", headers=auth(token)).get_json()
    assert [a["address"] for a in listing["aliases"]] == ["example-shop.com@alice.example"]
    assert listing["total"] == 1
    ident = created["id"]
    assert client.post(f"/api/aliases/{ident}/disable", headers=auth(token)).get_json()[
        "state"] == "disabled"
    assert client.post(f"/api/aliases/{ident}/enable", headers=auth(token)).get_json()[
        "state"] == "active"
    assert client.post(f"/api/aliases/{ident}/burn", headers=auth(token)).get_json()[
        "state"] == "burned"
    response = client.post(f"/api/aliases/{ident}/enable", headers=auth(token))
    assert response.status_code == 409 and "cannot become" in response.get_json()["error"]
    assert client.get(f"/api/aliases/{ident}", headers=auth(token)).get_json()["state"] == "burned"


def test_create_errors_are_json_with_proper_status(app, users, database):
    token = new_token(app, "alice")
    client = app.test_client()
    assert client.post("/api/aliases", headers=auth(token),
                       json={"site": "dup.com"}).status_code == 201
    cases = [
        ({"site": "dup.com"}, 409, "already exists"),
        ({"site": "<script>alert(1)</script>"}, 422, "not a web address"),
        ({"site": "ok.com", "domain": "bob.example"}, 422, "not one of your domains"),
        ({"site": 5}, 400, "must be a string"),
        ({"site": "ok.com", "destinations": "x"}, 400, "list of addresses"),
        ({}, 422, "Enter the site"),
    ]
    for body, status, text in cases:
        response = client.post("/api/aliases", headers=auth(token), json=body)
        assert response.status_code == status, (body, response.get_data(as_text=True))
        assert text in response.get_json()["error"], body
    response = client.post("/api/aliases", headers={**auth(token),
                                                    "Content-Type": "application/json"},
                           data="{not json")
    assert response.status_code == 400 and response.is_json
    with database.session() as s:
        core.set_state(s, core.get_alias(s, "dup.com@alice.example"), "burned")
    response = client.post("/api/aliases", headers=auth(token), json={"site": "dup.com"})
    assert response.status_code == 409 and "never handed out again" in response.get_json()["error"]


def test_api_ownership(app, users, database):
    with database.session() as s:
        bob = s.scalar(select(User).where(User.username == "bob"))
        theirs = core.create_alias(s, "private.com@bob.example", bob, site="private.com").id
    token = new_token(app, "alice")
    client = app.test_client()
    assert client.get(f"/api/aliases/{theirs}", headers=auth(token)).status_code == 404
    for action in ("disable", "enable", "burn"):
        response = client.post(f"/api/aliases/{theirs}/{action}", headers=auth(token))
        assert response.status_code == 404 and response.is_json
    assert client.get("/api/aliases", headers=auth(token)).get_json()["aliases"] == []
    with database.session() as s:
        assert s.get(Alias, theirs).state == "active"


def test_simplelogin_random_new(app, users, database):
    token = new_token(app, "alice")
    client = app.test_client()
    response = client.post("/api/alias/random/new?hostname=https://accounts.example.org/signup",
                           headers={"Authentication": token}, json={"note": "from Bitwarden"})
    assert response.status_code == 201
    address = response.get_json()["alias"]
    assert re.fullmatch(r"accounts\.example\.org\.[a-z0-9]{5}@alice\.example", address)
    with database.session() as s:
        alias = s.scalar(select(Alias).where(Alias.address == address))
        assert alias.note == "from Bitwarden" and alias.site == "accounts.example.org"
        assert alias.origin == "api"
    response = client.post("/api/alias/random/new", headers={"Authentication": token})
    assert response.status_code == 201
    assert re.fullmatch(r"[a-z0-9]{8}@alice\.example", response.get_json()["alias"])
    assert client.post("/api/alias/random/new").status_code == 401


def test_api_for_user_without_domain(app, database):
    add_user(database, "lonely")
    token = new_token(app, "lonely")
    response = app.test_client().post("/api/alias/random/new?hostname=x.com",
                                      headers={"Authentication": token})
    assert response.status_code == 422
    assert "You own no domain" in response.get_json()["error"]

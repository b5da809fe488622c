"""Contacts of an alias through the JSON API (SQLite and PostgreSQL): "write to
someone" makes the reverse alias to send to; disable, enable, delete; display names
that would inject headers are refused; nobody sees another user's contacts."""

from __future__ import annotations

import pytest

from aliasd.core import aliases as core
from tests.harness.webapp import add_user, make_app
from tests.test_web_api import auth, new_token


@pytest.fixture
def app(settings):
    return make_app(settings)


@pytest.fixture
def alias_ids(database):
    add_user(database, "alice", domain="alice.example")
    add_user(database, "bob", domain="bob.example")
    with database.session() as s:
        alice = core.get_user(s, "alice")
        shop = core.create_alias(s, "shop@alice.example", alice)
        dead = core.create_alias(s, "old@alice.example", alice)
        core.set_state(s, dead, "burned")
        return shop.id, dead.id


def test_write_to_someone_then_disable_enable_delete(app, alias_ids):
    client, headers = app.test_client(), auth(new_token(app, "alice"))
    shop, _ = alias_ids
    made = client.post(f"/api/aliases/{shop}/contacts", headers=headers,
                       json={"correspondent": "Friend@Elsewhere.Example", "name": "A Friend"})
    assert made.status_code == 201, made.get_json()
    contact = made.get_json()
    assert contact["correspondent"] == "friend@elsewhere.example"
    assert contact["reverse_alias"].startswith("ra-")
    assert contact["reverse_alias"].endswith("@alice.example")
    again = client.post(f"/api/aliases/{shop}/contacts", headers=headers,
                        json={"correspondent": "friend@elsewhere.example"})
    assert again.get_json()["reverse_alias"] == contact["reverse_alias"]  # stable

    cid = contact["id"]
    url = f"/api/aliases/{shop}/contacts/{cid}"
    assert client.post(url + "/disable", headers=headers).get_json()["enabled"] is False
    assert client.post(url + "/enable", headers=headers).get_json()["enabled"] is True
    assert client.delete(url, headers=headers).status_code == 204
    listed = client.get(f"/api/aliases/{shop}/contacts", headers=headers).get_json()
    assert listed["contacts"] == []


def test_bad_input_is_refused_and_nothing_is_made(app, alias_ids):
    client, headers = app.test_client(), auth(new_token(app, "alice"))
    shop, dead = alias_ids
    for payload in ({"correspondent": "not an address"},
                    {"correspondent": "loop@alice.example"},
                    {"correspondent": "a@b.example", "name": "Eve\r\nBcc: victim@x.example"}):
        response = client.post(f"/api/aliases/{shop}/contacts", headers=headers, json=payload)
        assert response.status_code == 422, (payload, response.get_json())
    response = client.post(f"/api/aliases/{dead}/contacts", headers=headers,
                           json={"correspondent": "a@b.example"})
    assert response.status_code == 422 and "burned" in response.get_json()["error"]
    response = client.post(f"/api/aliases/{shop}/reply-settings", headers=headers,
                           json={"reply_name": "Me\nBcc: x@y.example"})
    assert response.status_code == 422
    assert client.get(f"/api/aliases/{shop}/contacts", headers=headers).get_json() == {
        "contacts": []}


def test_reply_settings_and_other_users_contacts(app, alias_ids):
    alice, bob = auth(new_token(app, "alice")), auth(new_token(app, "bob"))
    client = app.test_client()
    shop, _ = alias_ids
    response = client.post(f"/api/aliases/{shop}/reply-settings", headers=alice,
                           json={"reply_name": "Shop Account", "reply_mode": "rewrite"})
    assert response.get_json() == {"reply_name": "Shop Account", "reply_mode": "rewrite"}
    made = client.post(f"/api/aliases/{shop}/contacts", headers=alice,
                       json={"correspondent": "x@y.example"}).get_json()
    assert client.get(f"/api/aliases/{shop}/contacts", headers=bob).status_code == 404
    assert client.delete(f"/api/aliases/{shop}/contacts/{made['id']}",
                         headers=bob).status_code == 404


def test_cli_write_to_prints_the_reverse_alias_and_lists_contacts(alias_ids, aliasd_cli):
    out = aliasd_cli("alias", "write-to", "shop@alice.example", "friend@elsewhere.example",
                     "--name", "A Friend").stdout.strip()
    assert out.startswith("ra-") and out.endswith("@alice.example")
    listed = aliasd_cli("alias", "contacts", "shop@alice.example").stdout
    assert listed.split("\t")[:3] == [out, "friend@elsewhere.example", "yes"]
    refused = aliasd_cli("alias", "write-to", "old@alice.example", "a@b.example", check=False)
    assert refused.returncode != 0 and "burned" in refused.stderr + refused.stdout


def test_cli_reply_settings_and_domain_reply_mode(alias_ids, aliasd_cli, database):
    aliasd_cli("alias", "reply-settings", "shop@alice.example", "--name", "Shop Me",
               "--mode", "rewrite")
    aliasd_cli("domain", "reply-mode", "alice.example", "rewrite")
    refused = aliasd_cli("alias", "reply-settings", "shop@alice.example", "--name",
                         "x\nBcc: y@z.example", check=False)
    assert refused.returncode != 0
    with database.session() as s:
        alias = core.get_alias(s, "shop@alice.example")
        assert (alias.reply_name, alias.reply_mode, alias.domain.reply_mode) == (
            "Shop Me", "rewrite", "rewrite")
    aliasd_cli("alias", "reply-settings", "shop@alice.example", "--mode", "default")
    with database.session() as s:
        assert core.get_alias(s, "shop@alice.example").reply_mode is None

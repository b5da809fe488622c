"""The alias page's contacts (SQLite and PostgreSQL): write to someone shows the address
to write to; contacts are listed with their refused count and can be disabled, enabled
and deleted; reply settings refuse header injection; other users cannot touch them."""

from __future__ import annotations

import re

import pytest

from aliasd.core import aliases as core
from aliasd.core import reverse_aliases as ra
from tests.harness.webapp import add_user, make_app, page_token, signed_in


@pytest.fixture
def app(settings):
    return make_app(settings)


@pytest.fixture
def shop_id(database):
    add_user(database, "alice", domain="alice.example")
    add_user(database, "bob", domain="bob.example")
    with database.session() as s:
        return core.create_alias(s, "shop@alice.example", core.get_user(s, "alice")).id


def test_write_to_someone_lists_the_contact_with_actions(app, shop_id, database):
    client = signed_in(app, "alice")
    page = f"/aliases/{shop_id}"
    token = page_token(client, page)
    response = client.post(f"{page}/contacts", follow_redirects=True, data={
        "csrf_token": token, "write-correspondent": "friend@elsewhere.example",
        "write-name": "A Friend"})
    html = response.get_data(as_text=True)
    address = re.search(r"Write to (ra-[0-9a-f]+@alice\.example) from your own mailbox", html)
    assert address, html
    assert "friend@elsewhere.example" in html and address.group(1) in html

    with database.session() as s:
        row = ra.list_for_alias(s, shop_id)[0]
        ra.record_refused(s, row.id, "mallory@evil.example")
    html = client.get(page).get_data(as_text=True)
    assert 'id="refused-total">1 time(s) so far' in html

    for action, shown in (("disable", "(disabled)"), ("enable", None)):
        html = client.post(f"{page}/contacts/{row.id}/{action}", follow_redirects=True,
                           data={"csrf_token": token}).get_data(as_text=True)
        assert (shown in html) if shown else "(disabled)" not in html
    html = client.post(f"{page}/contacts/{row.id}/delete", follow_redirects=True,
                       data={"csrf_token": token}).get_data(as_text=True)
    assert "No contacts yet." in html


def test_bad_input_is_refused_with_a_message(app, shop_id, database):
    client = signed_in(app, "alice")
    page = f"/aliases/{shop_id}"
    token = page_token(client, page)
    html = client.post(f"{page}/contacts", follow_redirects=True, data={
        "csrf_token": token, "write-correspondent": "loop@alice.example"}).get_data(as_text=True)
    assert "replies would loop" in html
    html = client.post(f"{page}/reply-settings", follow_redirects=True, data={
        "csrf_token": token, "reply-reply_name": "Me\r\nBcc: x@y.example",
        "reply-reply_mode": "rewrite"}).get_data(as_text=True)
    assert "line breaks" in html
    html = client.post(f"{page}/reply-settings", follow_redirects=True, data={
        "csrf_token": token, "reply-reply_name": "Shop Me",
        "reply-reply_mode": "rewrite"}).get_data(as_text=True)
    assert "Reply settings saved." in html
    with database.session() as s:
        alias = core.get_alias(s, "shop@alice.example")
        assert (alias.reply_name, alias.reply_mode) == ("Shop Me", "rewrite")


def test_other_users_cannot_see_or_change_contacts(app, shop_id, database):
    with database.session() as s:
        row = ra.write_to(s, core.get_alias(s, "shop@alice.example"), "x@y.example")
        row_id = row.id
    bob = signed_in(app, "bob")
    token = page_token(bob, "/")
    assert bob.get(f"/aliases/{shop_id}").status_code == 404
    response = bob.post(f"/aliases/{shop_id}/contacts/{row_id}/delete", data={"csrf_token": token})
    assert response.status_code == 404
    with database.session() as s:
        assert ra.list_for_alias(s, shop_id)[0].enabled


def _field_error(html: str, field_id: str) -> str:
    match = re.search(rf'<p class="error" id="{field_id}-error">([^<]*)</p>', html)
    return match.group(1) if match else ""


def test_a_refused_contact_or_reply_name_says_what_is_wrong_next_to_the_field(
        app, shop_id, database):
    client = signed_in(app, "alice")
    page = f"/aliases/{shop_id}"
    token = page_token(client, page)
    response = client.post(f"{page}/contacts", data={
        "csrf_token": token, "write-correspondent": "friend@elsewhere.example",
        "write-name": "x" * 5000})
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert "at most 100 characters" in _field_error(html, "write-name")
    assert _field_error(html, "write-correspondent") == ""
    assert 'value="friend@elsewhere.example"' in html  # what was typed is kept
    response = client.post(f"{page}/contacts", data={
        "csrf_token": token, "write-correspondent": "loop@alice.example"})
    assert "replies would loop" in _field_error(response.get_data(as_text=True),
                                                "write-correspondent")
    response = client.post(f"{page}/contacts", data={"csrf_token": token})
    assert _field_error(response.get_data(as_text=True), "write-correspondent") == \
        "Give the address you want to write to."
    for name, wrong in (("y" * 101, "at most 100 characters"), ("Me\nBcc: x@y.example",
                                                                "line breaks")):
        response = client.post(f"{page}/reply-settings", data={
            "csrf_token": token, "reply-reply_name": name, "reply-reply_mode": "rewrite"})
        assert response.status_code == 400
        assert wrong in _field_error(response.get_data(as_text=True), "reply-reply_name")
    with database.session() as s:
        alias = core.get_alias(s, "shop@alice.example")
        assert (alias.reply_name, alias.reply_mode) == (None, None)
        assert ra.list_for_alias(s, shop_id) == []

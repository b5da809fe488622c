"""The account page and web-session revocation (SQLite and PostgreSQL): a user changes
their password, signs out everywhere (copied cookies included), and an admin does both
from the command line. Sessions are signed cookies carrying the user's session epoch."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aliasd.core import aliases as core
from aliasd.core.passwords import verify_password
from aliasd.models import User
from tests.harness.webapp import PASSWORD, add_user, login, make_app, page_token, signed_in

NEW_PASSWORD = "a much longer new password"


@pytest.fixture
def app(settings):
    return make_app(settings)


@pytest.fixture
def alice(database):
    return add_user(database, "alice", domain="alice.example")


def copy_of(app, client):
    """Another browser holding a copy of ``client``'s session cookie (a stolen cookie)."""
    other = app.test_client()
    other.set_cookie("aliasd_session", client.get_cookie("aliasd_session").value)
    return other


def is_signed_in(client) -> bool:
    response = client.get("/")
    assert response.status_code in (200, 302)
    return response.status_code == 200


def change_password(client, current: str, new: str, confirm: str | None = None):
    return client.post("/settings/account", data={
        "current": current, "new": new, "confirm": new if confirm is None else confirm,
        "csrf_token": page_token(client, "/settings/account"),
    })


def user_row(database, name: str = "alice") -> User:
    with database.session() as s:
        user = s.scalar(select(User).where(User.username == name))
        s.expunge(user)
        return user


def test_sign_out_everywhere_ends_every_session_and_copied_cookie(app, alice):
    laptop, phone = signed_in(app, "alice"), signed_in(app, "alice")
    stolen = copy_of(app, laptop)
    assert is_signed_in(stolen)
    # Plain sign-out forgets this browser's cookie only.
    laptop.post("/logout", data={"csrf_token": page_token(laptop)})
    assert not is_signed_in(laptop) and is_signed_in(stolen)

    response = phone.post("/settings/account/sign-out-everywhere",
                          data={"csrf_token": page_token(phone, "/settings/account")})
    assert response.status_code == 302 and response.headers["Location"].endswith("/login")
    assert "Signed out everywhere" in phone.get("/login").get_data(as_text=True)
    assert not is_signed_in(phone) and not is_signed_in(stolen)
    assert is_signed_in(signed_in(app, "alice"))  # signing in again works


def test_sign_out_everywhere_needs_the_csrf_token(app, alice):
    client = signed_in(app, "alice")
    client.post("/settings/account/sign-out-everywhere", data={})
    assert is_signed_in(client)


def test_password_change_keeps_this_session_and_ends_the_others(app, alice, database):
    here, elsewhere = signed_in(app, "alice"), signed_in(app, "alice")
    response = change_password(here, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 302
    assert "Password changed" in here.get("/settings/account").get_data(as_text=True)
    assert is_signed_in(here) and not is_signed_in(elsewhere)
    assert verify_password(user_row(database).password_hash, NEW_PASSWORD)
    assert login(app.test_client(), "alice", PASSWORD).status_code == 401
    assert login(app.test_client(), "alice", NEW_PASSWORD).status_code == 302


@pytest.mark.parametrize(("current", "new", "confirm", "status", "message"), [
    ("wrong password", NEW_PASSWORD, None, 422, "the current password is wrong"),
    (PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x", 400, "The two new passwords differ."),
    (PASSWORD, "short", None, 400, "between 8 and 1024 characters"),
    (PASSWORD, "x" * 1025, None, 400, "between 8 and 1024 characters"),
    ("", NEW_PASSWORD, None, 400, "This field is required."),
])
def test_refused_password_changes_change_nothing(app, alice, database,
                                                 current, new, confirm, status, message):
    here, elsewhere = signed_in(app, "alice"), signed_in(app, "alice")
    before = user_row(database)
    response = change_password(here, current, new, confirm)
    assert response.status_code == status
    assert message in response.get_data(as_text=True)
    after = user_row(database)
    assert (after.password_hash, after.session_epoch) == (before.password_hash, before.session_epoch)
    assert is_signed_in(here) and is_signed_in(elsewhere)


def test_guessing_the_current_password_is_rate_limited(app, alice, settings):
    # A stolen session must not become a way to find the password.
    client = signed_in(app, "alice")
    for _ in range(settings.login_rate_limit):
        assert change_password(client, "a wrong guess", NEW_PASSWORD).status_code == 422
    response = change_password(client, PASSWORD, NEW_PASSWORD)
    assert response.status_code == 422
    assert "too many wrong passwords" in response.get_data(as_text=True)
    assert login(app.test_client(), "alice", PASSWORD).status_code == 429  # shared limit


def test_directory_users_change_their_password_in_the_directory(app, database):
    with database.session() as s:
        user = core.create_user(s, "dora", "dora@mailbox.example", password_hash=None)
        user.auth_source = "ldap"
        uid = user.id
    client = app.test_client()
    with client.session_transaction() as sess:  # as the LDAP sign-in leaves it
        sess["uid"], sess["epoch"] = uid, 0
    page = client.get("/settings/account").get_data(as_text=True)
    assert "kept in the directory" in page and 'id="password-form"' not in page
    response = change_password(client, "anything", NEW_PASSWORD)
    assert response.status_code == 422 and "change it there" in response.get_data(as_text=True)


def test_account_page_is_linked_from_every_page(app, alice):
    page = signed_in(app, "alice").get("/").get_data(as_text=True)
    assert 'href="/settings/account"' in page


@pytest.mark.parametrize("engine_name", ["sqlite"])  # subprocesses; the core runs on both above
def test_admin_resets_a_password_and_signs_a_user_out_from_the_cli(app, alice, aliasd_cli):
    client = signed_in(app, "alice")
    out = aliasd_cli("user", "passwd", "alice", "--password-stdin", input=NEW_PASSWORD + "\n")
    assert out.stdout.strip() == "password of alice changed; their web sessions are signed out"
    assert not is_signed_in(client)
    client = signed_in(app, "alice", NEW_PASSWORD)
    assert aliasd_cli("user", "sign-out", "alice").stdout.strip() == (
        "every web session of alice is signed out")
    assert not is_signed_in(client)

    short = aliasd_cli("user", "passwd", "alice", "--password-stdin", input="short\n", check=False)
    assert short.returncode != 0 and "at least 8 characters" in short.stderr
    nobody = aliasd_cli("user", "sign-out", "nobody", check=False)
    assert nobody.returncode != 0 and "no user named 'nobody'" in nobody.stderr
    assert is_signed_in(signed_in(app, "alice", NEW_PASSWORD))  # the refused reset changed nothing

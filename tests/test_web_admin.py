"""Admin pages (domains, users) and each user's own name and mailbox, through Flask's test
client on SQLite and PostgreSQL: who may open them, what they change, and that hostile
input gets a form error and changes nothing."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from aliasd.core import aliases as core
from aliasd.models import Alias, AliasChange, Domain, User
from tests.harness.webapp import PASSWORD, add_user, make_app, page_token, signed_in


@pytest.fixture
def app(settings):
    return make_app(settings)


@pytest.fixture
def alice(database):
    return add_user(database, "alice", domain="alice.example")


@pytest.fixture
def root(database):
    return add_user(database, "root", admin=True)


def domain_row(db, name):
    with db.session() as s:
        return s.scalar(select(Domain).where(Domain.name == name))


def user_row(db, name):
    with db.session() as s:
        return s.scalar(select(User).where(User.username == name))


def post(client, path, page=None, **data):
    data["csrf_token"] = page_token(client, page or path)
    return client.post(path, data=data)


def errors_of(response) -> str:
    return " ".join(re.findall(r'<p class="error"[^>]*>([^<]*)</p>', response.get_data(as_text=True)))


ADMIN_PAGES = ["/admin/domains", "/admin/users"]


# --- who may open them ---------------------------------------------------------------------
def test_admin_pages_are_refused_to_users_and_ask_strangers_to_sign_in(app, alice, root, database):
    domain_id = domain_row(database, "alice.example").id
    pages = [*ADMIN_PAGES, f"/admin/domains/{domain_id}", f"/admin/users/{alice}"]
    stranger = app.test_client()
    for path in pages:
        response = stranger.get(path)
        assert response.status_code == 302 and "/login?next=" in response.headers["Location"]
    client = signed_in(app, "alice")
    token = page_token(client, "/")
    for path in pages:
        assert client.get(path).status_code == 403, path
        response = client.post(path, data={"csrf_token": token, "name": "evil.example",
                                           "catch_all": "create", "username": "mallory",
                                           "role-is_admin": "y", "role-save_role": "Save role"})
        assert response.status_code == 403, path
    assert client.post(f"/admin/users/{alice}/sign-out-everywhere",
                       data={"csrf_token": token}).status_code == 403
    assert domain_row(database, "evil.example") is None
    assert user_row(database, "mallory") is None
    assert not user_row(database, "alice").is_admin
    assert domain_row(database, "alice.example").catch_all == "reject"
    # The nav offers the admin pages to admins only.
    assert "/admin/domains" not in client.get("/").get_data(as_text=True)
    admin = signed_in(app, "root")
    html = admin.get("/").get_data(as_text=True)
    assert 'href="/admin/domains"' in html and 'href="/admin/users"' in html
    for path in pages:
        assert admin.get(path).status_code == 200, path


def test_admin_forms_need_their_csrf_token(app, root, alice, database):
    client = signed_in(app, "root")
    response = client.post("/admin/domains", data={"name": "new.example", "owner": alice,
                                                   "catch_all": "reject"})
    assert response.status_code == 400 and "Form expired" in response.get_data(as_text=True)
    assert domain_row(database, "new.example") is None
    response = client.post(f"/admin/users/{alice}", data={"role-is_admin": "y",
                                                          "role-save_role": "Save role"})
    assert response.status_code == 400
    assert not user_row(database, "alice").is_admin


# --- domains -----------------------------------------------------------------------------
def test_admin_adds_a_domain_with_catch_all_gate_and_cap(app, root, alice, database):
    client = signed_in(app, "root")
    response = post(client, "/admin/domains", name="Shop.Example", owner=alice,
                    catch_all="create", catch_all_regex=r"[a-z0-9.-]+\.[a-z]{2,}",
                    max_per_hour="20")
    assert response.status_code == 302
    domain = domain_row(database, "shop.example")
    assert domain.catch_all == "create" and domain.catch_all_max_per_hour == 20
    assert domain.catch_all_regex == r"[a-z0-9.-]+\.[a-z]{2,}" and domain.owner_id == alice
    listing = client.get("/admin/domains").get_data(as_text=True)
    assert 'data-domain="shop.example"' in listing and "[a-z0-9.-]+" in listing
    # and it has its DKIM key for ARC seals, as one added with `aliasd domain add`
    from aliasd.mailauth import keys

    assert keys.known_domains(app.config["ALIASD_SETTINGS"]) == ["shop.example"]
    # The catch-all now follows the new policy: gate and cap are core's, as for the CLI.
    with database.session() as s:
        dom = core.get_domain(s, "shop.example")
        assert core.catch_all_create(s, dom, "github.com").address == "github.com@shop.example"
        assert core.catch_all_create(s, dom, "no-dot-here") is None


def test_add_a_domain_preselects_the_signed_in_admin_as_owner(app, root, alice):
    # "alice" sorts before "root": the form must not simply take the first user.
    html = signed_in(app, "root").get("/admin/domains").get_data(as_text=True)
    selected = re.findall(r'<option selected value="(\d+)"|<option value="(\d+)" selected',
                          html)
    assert [int(a or b) for a, b in selected] == [root]


def test_admin_changes_and_removes_the_gate_and_cap(app, root, alice, database):
    domain_id = domain_row(database, "alice.example").id
    client = signed_in(app, "root")
    path = f"/admin/domains/{domain_id}"
    with database.session() as s:
        seq_before = s.scalar(select(AliasChange.seq).order_by(AliasChange.seq.desc()).limit(1))
    assert post(client, path, catch_all="create", catch_all_regex="[a-z]+",
                max_per_hour="5").status_code == 302
    domain = domain_row(database, "alice.example")
    assert (domain.catch_all, domain.catch_all_regex, domain.catch_all_max_per_hour) == (
        "create", "[a-z]+", 5)
    with database.session() as s:  # lookupd is told to reload its domains
        changes = s.scalars(select(AliasChange).where(AliasChange.seq > (seq_before or 0)))
        assert any(c.address is None for c in changes)
    page = client.get(path).get_data(as_text=True)
    assert 'value="[a-z]+"' in page and 'id="dns-status"' in page
    assert post(client, path, catch_all="reject", catch_all_regex="", max_per_hour="").status_code == 302
    domain = domain_row(database, "alice.example")
    assert (domain.catch_all, domain.catch_all_regex, domain.catch_all_max_per_hour) == (
        "reject", None, None)


@pytest.mark.parametrize(("fields", "message"), [
    ({"name": "not a domain!"}, ""),
    ({"name": "alice.example"}, "already managed"),
    ({"catch_all_regex": "(unclosed"}, "is invalid"),
    ({"catch_all_regex": "a" * 501}, "500"),
    ({"max_per_hour": "-1"}, "whole number from 0"),
    ({"max_per_hour": "many"}, "integer"),
    ({"max_per_hour": "99999999999999999999"}, "whole number from 0"),
    ({"catch_all": "accept-everything"}, "Not a valid choice"),
    ({"owner": "999999"}, "Not a valid choice"),
    ({"owner": "x"}, ""),
    ({"name": "x" * 300}, "253"),
])
def test_hostile_domain_input_gets_a_form_error_and_adds_nothing(app, root, alice, database,
                                                                 fields, message):
    client = signed_in(app, "root")
    data = {"name": "new.example", "owner": str(alice), "catch_all": "create", **fields}
    response = post(client, "/admin/domains", **data)
    assert response.status_code in (400, 422)
    errors = errors_of(response)
    assert errors and message in errors
    with database.session() as s:
        assert s.scalar(select(Domain.name).where(Domain.name != "alice.example")) is None


def test_a_bad_gate_on_an_existing_domain_keeps_the_old_settings(app, root, alice, database):
    domain_id = domain_row(database, "alice.example").id
    client = signed_in(app, "root")
    path = f"/admin/domains/{domain_id}"
    assert post(client, path, catch_all="create", catch_all_regex="[a-z]+").status_code == 302
    response = post(client, path, catch_all="reject", catch_all_regex="([a-z]", max_per_hour="3")
    assert response.status_code == 422 and "is invalid" in errors_of(response)
    domain = domain_row(database, "alice.example")
    assert (domain.catch_all, domain.catch_all_regex, domain.catch_all_max_per_hour) == (
        "create", "[a-z]+", None)
    assert client.get("/admin/domains/2147483647").status_code == 404


# --- users -------------------------------------------------------------------------------
def test_admin_adds_a_local_user_who_can_sign_in(app, root, database):
    client = signed_in(app, "root")
    response = post(client, "/admin/users", username="carol", mailbox="Carol@Mail.Example",
                    display_name="Carol Jones", password="carol's password",
                    confirm="carol's password")
    assert response.status_code == 302
    carol = user_row(database, "carol")
    assert carol.mailbox == "carol@mail.example" and carol.display_name == "Carol Jones"
    assert not carol.is_admin and carol.auth_source == "local"
    listing = client.get("/admin/users").get_data(as_text=True)
    assert 'data-user="carol"' in listing and "carol@mail.example" in listing
    other = signed_in(app, "carol", "carol's password")
    assert "Carol Jones" in other.get("/").get_data(as_text=True)  # the header greets her


@pytest.mark.parametrize(("fields", "message"), [
    ({"username": "alice"}, "already exists"),
    ({"username": "bad\tname"}, "spaces or invisible characters"),
    ({"username": "a b"}, "spaces or invisible characters"),
    ({"username": "\u202egnp.exe"}, "U+202E"),  # shown as "exe.png"
    ({"username": "<script>x"}, "must not contain"),
    ({"username": "../../etc/passwd"}, "must not contain"),
    ({"mailbox": "not-an-address"}, "Mailbox"),
    ({"mailbox": "a@b@c.example"}, "Mailbox"),
    ({"password": "short", "confirm": "short"}, "between 8"),
    ({"confirm": "something else"}, "differ"),
    ({"display_name": "x" * 101}, "100"),
    ({"username": ""}, "required"),
])
def test_hostile_user_input_gets_a_form_error_and_adds_nobody(app, root, alice, database,
                                                              fields, message):
    client = signed_in(app, "root")
    data = {"username": "dave", "mailbox": "dave@mail.example", "password": PASSWORD,
            "confirm": PASSWORD, **fields}
    response = post(client, "/admin/users", **data)
    assert response.status_code in (400, 422)
    assert message in errors_of(response)
    with database.session() as s:
        assert sorted(s.scalars(select(User.username))) == ["alice", "root"]


def test_admin_flag_is_granted_and_the_last_admin_keeps_it(app, root, alice, database):
    client = signed_in(app, "root")
    path = f"/admin/users/{alice}"
    assert post(client, path, **{"role-is_admin": "y", "role-save_role": "Save role"}
                ).status_code == 302
    assert user_row(database, "alice").is_admin
    assert post(client, path, **{"role-save_role": "Save role"}).status_code == 302
    assert not user_row(database, "alice").is_admin
    # root is now the only admin: taking the role away is refused with a reason
    response = post(client, f"/admin/users/{root}", **{"role-save_role": "Save role"})
    assert response.status_code == 422 and "last admin" in errors_of(response)
    assert user_row(database, "root").is_admin


def test_admin_signs_a_user_out_everywhere(app, root, alice, database):
    alice_client = signed_in(app, "alice")
    assert alice_client.get("/").status_code == 200
    admin = signed_in(app, "root")
    response = post(admin, f"/admin/users/{alice}/sign-out-everywhere", f"/admin/users/{alice}")
    assert response.status_code == 302
    assert "/login" in alice_client.get("/").headers["Location"]
    assert admin.get("/").status_code == 200  # only alice's sessions ended


def test_admin_changes_a_users_mailbox_and_their_aliases_follow(app, root, alice, database):
    with database.session() as s:
        owner = s.get(User, alice)
        core.create_alias(s, "a.com@alice.example", owner, site="a.com")
        core.create_alias(s, "b.com@alice.example", owner, site="b.com",
                          destinations=["alice@mailbox.example", "team@work.example"])
        core.create_alias(s, "c.com@alice.example", owner, site="c.com",
                          destinations=["other@else.example"])
    client = signed_in(app, "root")
    response = post(client, f"/admin/users/{alice}", **{
        "profile-mailbox": "alice@new.example", "profile-display_name": "Alice",
        "profile-save": "Save profile"})
    assert response.status_code == 302
    assert "2 alias(es) now forward to alice@new.example" in client.get(
        f"/admin/users/{alice}").get_data(as_text=True)
    with database.session() as s:
        dests = {a.address: a.destinations for a in s.scalars(select(Alias))}
    assert dests == {"a.com@alice.example": "alice@new.example",
                     "b.com@alice.example": "alice@new.example,team@work.example",
                     "c.com@alice.example": "other@else.example"}
    assert user_row(database, "alice").display_name == "Alice"


# --- one's own settings ----------------------------------------------------------------------
def test_user_sets_own_display_name_and_mailbox(app, alice, database):
    with database.session() as s:
        core.create_alias(s, "a.com@alice.example", s.get(User, alice), site="a.com")
    client = signed_in(app, "alice")
    page = client.get("/settings/account").get_data(as_text=True)
    assert 'value="alice@mailbox.example"' in page
    response = post(client, "/settings/account/profile", "/settings/account", **{
        "profile-display_name": "  Alice   Liddell ", "profile-mailbox": "Alice@Wonder.Example",
        "profile-save": "Save profile"})
    assert response.status_code == 302
    user = user_row(database, "alice")
    assert (user.display_name, user.mailbox) == ("Alice Liddell", "alice@wonder.example")
    with database.session() as s:
        assert s.scalar(select(Alias.destinations)) == "alice@wonder.example"
    html = client.get("/settings/account").get_data(as_text=True)
    assert "1 alias(es) now forward to alice@wonder.example" in html
    assert "Alice Liddell" in html  # in the header


@pytest.mark.parametrize(("fields", "message"), [
    ({"profile-mailbox": "nobody"}, "Mailbox"),
    ({"profile-mailbox": ""}, "Mailbox"),
    ({"profile-mailbox": "a.com@alice.example"}, "is an alias"),
    ({"profile-display_name": "x" * 101}, "100"),
    ({"profile-display_name": "bell\x07"}, "control characters"),
])
def test_hostile_profile_input_gets_a_form_error_and_changes_nothing(app, alice, database,
                                                                     fields, message):
    with database.session() as s:
        core.create_alias(s, "a.com@alice.example", s.get(User, alice), site="a.com")
    client = signed_in(app, "alice")
    data = {"profile-display_name": "New Name", "profile-mailbox": "alice@else.example",
            "profile-save": "Save profile", **fields}
    response = post(client, "/settings/account/profile", "/settings/account", **data)
    assert response.status_code in (400, 422)
    assert message in errors_of(response)
    user = user_row(database, "alice")
    assert (user.display_name, user.mailbox) == (None, "alice@mailbox.example")


def test_directory_users_mailbox_and_role_are_shown_not_edited(app, root, database):
    with database.session() as s:
        lena_id = core.create_user(s, "lena", "lena@corp.example", auth_source="ldap").id
    client = signed_in(app, "root")
    path = f"/admin/users/{lena_id}"
    page = client.get(path).get_data(as_text=True)
    assert 'name="profile-mailbox"' not in page and "Kept in the directory" in page
    assert re.search(r'<input[^>]*disabled[^>]*name="role-is_admin"|'
                     r'<input[^>]*name="role-is_admin"[^>]*disabled', page)
    # A forged mailbox is ignored (the directory owns it); the display name is saved.
    assert post(client, path, **{"profile-display_name": "Lena", "profile-mailbox": "x@evil.example",
                                 "profile-save": "Save profile"}).status_code == 302
    lena = user_row(database, "lena")
    assert (lena.display_name, lena.mailbox) == ("Lena", "lena@corp.example")
    response = post(client, path, **{"role-is_admin": "y", "role-save_role": "Save role"})
    assert response.status_code == 422 and "directory" in errors_of(response)
    assert not user_row(database, "lena").is_admin


def test_profile_form_needs_sign_in_and_csrf(app, alice, database):
    stranger = app.test_client()
    response = stranger.post("/settings/account/profile", data={
        "profile-mailbox": "x@y.example", "csrf_token": page_token(stranger, "/login")})
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    client = signed_in(app, "alice")
    response = client.post("/settings/account/profile",
                           data={"profile-mailbox": "x@y.example", "profile-save": "Save profile"})
    assert response.status_code == 400
    assert user_row(database, "alice").mailbox == "alice@mailbox.example"

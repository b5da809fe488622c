"""LDAP sign-in against a real slapd on loopback: search-then-bind (service account and
anonymous), DN template, admin group, names with special characters, filter injection,
StartTLS and ldaps:// with a private CA (and refusal without it), directory down; through the web login, first sign-in creates the user and later ones
refresh the mailbox (SQLite and PostgreSQL); signed-in users and API tokens follow the
directory between sign-ins (entry removed, admin group changed, directory down)."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import select

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.core.auth import LdapUnavailable, SignInOutcome, authenticate, ldap_authenticate
from aliasd.core.tokens import create_token
from aliasd.models import LoginAttempt, User
from tests.harness.net import free_port
from tests.harness.slapd import (
    ADMIN_GROUP_DN,
    BASE_DN,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PW,
    Person,
    SlapdInstance,
    standard_directory,
)
from tests.harness.webapp import add_user, csrf_from, make_app, signed_in

pytestmark = pytest.mark.ldap


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    instance = SlapdInstance(tmp_path_factory.mktemp("slapd"), tls=True).start()
    standard_directory(instance)
    yield instance
    instance.stop()


def ldap_settings(slapd, mode: str = "service", **extra):
    values = dict(
        ldap_uri=slapd.uri,
        ldap_base_dn=BASE_DN,
        ldap_admin_group_dn=ADMIN_GROUP_DN,
        ldap_timeout=3.0,
    )
    if mode == "service":
        values.update(ldap_bind_dn=SERVICE_DN, ldap_bind_password=SERVICE_PW)
    elif mode == "template":
        values.update(ldap_user_dn_template="uid={username},ou=people," + BASE_DN)
    values.update(extra)
    return load_settings(environ={}, env="development", secret_key="x" * 20, **values)


MODES = ["service", "anonymous", "template"]


@pytest.mark.parametrize("mode", MODES)
def test_users_sign_in_and_get_mailbox_and_admin_flag(slapd, mode):
    settings = ldap_settings(slapd, mode)
    alice = ldap_authenticate(settings, "alice", PEOPLE["alice"].password)
    assert alice is not None
    assert alice.mail == "Alice@Corp.Example"
    assert alice.dn == PEOPLE["alice"].dn
    assert alice.is_admin is False
    carol = ldap_authenticate(settings, "carol", PEOPLE["carol"].password)
    assert carol is not None and carol.is_admin is True


@pytest.mark.parametrize("mode", MODES)
def test_wrong_empty_and_unknown_are_refused(slapd, mode):
    settings = ldap_settings(slapd, mode)
    assert ldap_authenticate(settings, "alice", "wrong") is None
    assert ldap_authenticate(settings, "alice", "") is None  # not an anonymous bind
    assert ldap_authenticate(settings, "nobody", "alice-pw-1") is None
    # another user's password does not work either
    assert ldap_authenticate(settings, "alice", PEOPLE["bob"].password) is None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key", ["obrien", "jorg", "star"])
def test_names_with_special_characters(slapd, mode, key):
    person = PEOPLE[key]
    settings = ldap_settings(slapd, mode)
    identity = ldap_authenticate(settings, person.uid, person.password)
    assert identity is not None, person.uid
    assert identity.username == person.uid
    assert identity.mail == person.mail
    assert ldap_authenticate(settings, person.uid, "wrong") is None


INJECTIONS = ["*", "*)(uid=*", "admin)(|(uid=*", "alice)(uid=*", "*)(|(objectClass=*",
              "al*", "alice)(&", "\\2a", "alice,ou=people"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", INJECTIONS)
def test_filter_injection_does_not_sign_in(slapd, mode, name):
    settings = ldap_settings(slapd, mode)
    for person in ("alice", "carol"):
        assert ldap_authenticate(settings, name, PEOPLE[person].password) is None


def test_directory_down_is_unavailable_not_wrong_password():
    settings = load_settings(environ={}, env="development", secret_key="x" * 20,
                             ldap_uri=f"ldap://127.0.0.1:{free_port()}/", ldap_base_dn=BASE_DN,
                             ldap_timeout=1.0)
    with pytest.raises(LdapUnavailable):
        ldap_authenticate(settings, "alice", "alice-pw-1")


@pytest.mark.parametrize("how", ["starttls", "ldaps"])
def test_tls_with_the_private_ca_signs_in(slapd, how):
    if how == "starttls":
        settings = ldap_settings(slapd, "service", ldap_starttls=True,
                                 ldap_ca_file=str(slapd.ca_file))
    else:
        settings = ldap_settings(slapd, "service", ldap_uri=slapd.ldaps_uri,
                                 ldap_ca_file=str(slapd.ca_file))
    identity = ldap_authenticate(settings, "carol", PEOPLE["carol"].password)
    assert identity is not None and identity.is_admin
    assert ldap_authenticate(settings, "carol", "wrong") is None


@pytest.mark.parametrize("how", ["starttls", "ldaps"])
def test_untrusted_certificate_is_unavailable_never_plaintext(slapd, how):
    # Without the private CA the certificate is not trusted: refuse, don't fall back.
    if how == "starttls":
        settings = ldap_settings(slapd, "service", ldap_starttls=True)
    else:
        settings = ldap_settings(slapd, "service", ldap_uri=slapd.ldaps_uri)
    with pytest.raises(LdapUnavailable):
        ldap_authenticate(settings, "alice", PEOPLE["alice"].password)


@pytest.mark.parametrize("mode", ["service", "anonymous"])
def test_a_search_the_directory_refuses_is_unavailable_not_wrong_password(slapd, mode):
    # A search base that does not exist: the directory says nothing about the user.
    settings = ldap_settings(slapd, mode, ldap_base_dn="ou=nowhere," + BASE_DN)
    with pytest.raises(LdapUnavailable):
        ldap_authenticate(settings, "alice", PEOPLE["alice"].password)


def test_bad_service_account_is_unavailable(slapd):
    settings = ldap_settings(slapd, "service", ldap_bind_password="nope")
    with pytest.raises(LdapUnavailable):
        ldap_authenticate(settings, "alice", PEOPLE["alice"].password)


# --- through the database and the web login -----------------------------------------
def test_first_login_creates_user_later_logins_refresh(slapd, database, settings):
    cfg = settings.with_overrides(
        ldap_uri=slapd.uri, ldap_base_dn=BASE_DN, ldap_bind_dn=SERVICE_DN,
        ldap_bind_password=SERVICE_PW, ldap_admin_group_dn=ADMIN_GROUP_DN,
    )
    with database.session() as s:
        result = authenticate(s, cfg, "alice", PEOPLE["alice"].password, "192.0.2.1")
        assert result.outcome == SignInOutcome.OK
    with database.session() as s:
        user = s.scalar(select(User).where(User.username == "alice"))
        assert user.auth_source == "ldap"
        assert user.mailbox == "alice@corp.example"
        assert user.password_hash is None
        assert not user.is_admin
        user.mailbox = "stale@old.example"
        user.is_admin = True
    with database.session() as s:
        assert authenticate(s, cfg, "alice", PEOPLE["alice"].password, "192.0.2.1").ok
    with database.session() as s:
        user = s.scalar(select(User).where(User.username == "alice"))
        assert user.mailbox == "alice@corp.example"  # refreshed from the directory
        assert not user.is_admin  # group membership decides, not the old flag
        assert s.scalar(select(User).where(User.username == "alice")) is not None
        assert len(list(s.scalars(select(User)))) == 1


def test_web_login_via_ldap_and_refusals(slapd, database, settings):
    cfg = dict(ldap_uri=slapd.uri, ldap_base_dn=BASE_DN, ldap_bind_dn=SERVICE_DN,
               ldap_bind_password=SERVICE_PW, ldap_admin_group_dn=ADMIN_GROUP_DN)
    app = make_app(settings, **cfg)
    client = app.test_client()

    def post(name, password):
        token = csrf_from(client.get("/login").get_data(as_text=True))
        return client.post("/login", data={"username": name, "password": password,
                                           "csrf_token": token})

    for name in INJECTIONS[:3]:
        response = post(name, PEOPLE["carol"].password)
        assert response.status_code == 401
        assert "Wrong user name or password" in response.get_data(as_text=True)
    response = post("nomail", PEOPLE["nomail"].password)
    assert response.status_code == 401
    assert "no usable mail address" in response.get_data(as_text=True)
    # a directory name that would show as another ("\u202egnp.exe" reads "exe.png")
    response = post(PEOPLE["reversed"].uid, PEOPLE["reversed"].password)
    assert response.status_code == 401
    assert "cannot be used here" in response.get_data(as_text=True)
    response = post("jörg", PEOPLE["jorg"].password)
    assert response.status_code == 302
    page = client.get("/").get_data(as_text=True)
    assert "jörg" in page
    with database.session() as s:
        user = s.scalar(select(User).where(User.username == "jörg"))
        assert user is not None and user.mailbox == "joerg@corp.example"
        # the injection attempts were counted as failures
        assert s.scalar(select(LoginAttempt).where(LoginAttempt.key == "user:*")) is not None


def test_rate_limit_holds_for_every_spelling_the_directory_takes_for_a_name(slapd, database,
                                                                            settings):
    """The directory matches names loosely (full-width letters, a dotted capital I,
    spaces around), so each such spelling is the same account, and all share the one
    per-name counter: wrong guesses from many addresses cannot be spread over them."""
    cfg = dict(ldap_uri=slapd.uri, ldap_base_dn=BASE_DN, ldap_bind_dn=SERVICE_DN,
               ldap_bind_password=SERVICE_PW, ldap_admin_group_dn=ADMIN_GROUP_DN)
    spellings = ["alice", "ａｌｉｃｅ", "ALİCE", "\u00a0alice\u00a0"]
    for name in spellings:  # the directory signs each of them in as alice
        identity = ldap_authenticate(ldap_settings(slapd), name, PEOPLE["alice"].password)
        assert identity is not None and identity.username == "alice"
    app = make_app(settings, login_rate_limit=len(spellings), login_rate_limit_per_client=100,
                   **cfg)

    def attempt(name, password, addr):
        client = app.test_client()
        env = {"REMOTE_ADDR": addr}
        token = csrf_from(client.get("/login", environ_base=env).get_data(as_text=True))
        return client.post("/login", environ_base=env, data={
            "username": name, "password": password, "csrf_token": token}).status_code

    for i, name in enumerate(spellings):
        assert attempt(name, "wrong guess", f"192.0.2.{i + 1}") == 401
    assert attempt("alice", PEOPLE["alice"].password, "198.51.100.7") == 429


# --- between sign-ins: the periodic re-check against the directory -------------------
RECHECK = 0.3  # seconds: ldap_recheck_interval in these tests (300 by default)


def web_cfg(slapd, mode: str = "service", **extra) -> dict:
    cfg = dict(ldap_uri=slapd.uri, ldap_base_dn=BASE_DN, ldap_admin_group_dn=ADMIN_GROUP_DN,
               ldap_timeout=2.0, ldap_recheck_interval=RECHECK)
    if mode == "service":
        cfg.update(ldap_bind_dn=SERVICE_DN, ldap_bind_password=SERVICE_PW)
    else:  # the user binds through the template; the re-check reads anonymously
        cfg.update(ldap_user_dn_template="uid={username},ou=people," + BASE_DN)
    cfg.update(extra)
    return cfg


def newcomer(slapd, uid: str, *, admin: bool) -> Person:
    """A person of this test only (the directory is shared by the module's tests)."""
    person = Person(uid, f"{uid}-pw-1", f"{uid}@corp.example")
    slapd.add_person(person)
    if admin:
        slapd.set_member(ADMIN_GROUP_DN, person.dn, member=True)
    return person


def api_token(database, username: str) -> str:
    with database.session() as s:
        user = s.scalar(select(User).where(User.username == username))
        return create_token(s, user, "laptop")[1]


def api_get(app, token: str):
    return app.test_client().get("/api/aliases", headers={"Authorization": f"Bearer {token}"})


def someone_elses_alias(database) -> str:
    """An alias of a local user, which only an admin's API token lists."""
    add_user(database, "erin", domain="erin.example")
    with database.session() as s:
        erin = s.scalar(select(User).where(User.username == "erin"))
        return core.create_alias(s, "shop@erin.example", erin).address


def listed(response) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [a["address"] for a in response.get_json()["aliases"]]


def stored(database, username: str) -> User:
    with database.session() as s:
        user = s.scalar(select(User).where(User.username == username))
        s.expunge(user)
        return user


@pytest.mark.parametrize("mode", ["service", "template"])
def test_a_user_removed_from_the_directory_loses_their_session_and_tokens_within_the_recheck_interval(
        slapd, database, settings, engine_name, mode, aliasd_cli):
    person = newcomer(slapd, f"gone-{engine_name}-{mode}", admin=True)
    other = someone_elses_alias(database)
    app = make_app(settings, **web_cfg(slapd, mode))
    client = signed_in(app, person.uid, person.password)
    phone = signed_in(app, person.uid, person.password)
    token = api_token(database, person.uid)
    assert client.get("/admin/users").status_code == 200
    assert other in listed(api_get(app, token))

    slapd.ldapdelete(person.dn)  # its member value in the admin group stays, dangling
    time.sleep(RECHECK + 0.1)

    response = client.get("/admin/users")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "no longer in the directory" in page
    assert client.get("/").status_code == 302  # signed out, not just refused once
    # Their other browser is signed out too, and told why.
    assert phone.get("/").status_code == 302
    assert "no longer in the directory" in phone.get("/login").get_data(as_text=True)
    assert api_get(app, token).status_code == 401
    user = stored(database, person.uid)
    assert user.directory_missing_since is not None and not user.is_admin
    assert f"{person.uid}\t{person.mail}\tldap gone-from-directory" in \
        aliasd_cli("user", "list").stdout
    add_user(database, f"root-{mode}", admin=True)
    users_page = signed_in(app, f"root-{mode}").get("/admin/users").get_data(as_text=True)
    assert "directory (LDAP), gone from it since" in users_page
    # Still refused after the next interval: the directory still has no such entry.
    time.sleep(RECHECK + 0.1)
    assert api_get(app, token).status_code == 401

    # Back in the directory: they sign in again with their directory password.
    slapd.add_person(person)
    again = signed_in(app, person.uid, person.password)
    assert again.get("/admin/users").status_code == 200
    assert stored(database, person.uid).directory_missing_since is None


def test_a_user_removed_from_the_admin_group_loses_admin_pages(slapd, database, settings,
                                                                engine_name):
    person = newcomer(slapd, f"demoted-{engine_name}", admin=True)
    other = someone_elses_alias(database)
    app = make_app(settings, **web_cfg(slapd))
    client = signed_in(app, person.uid, person.password)
    token = api_token(database, person.uid)
    assert client.get("/admin/users").status_code == 200
    assert other in listed(api_get(app, token))

    slapd.set_member(ADMIN_GROUP_DN, person.dn, member=False)
    time.sleep(RECHECK + 0.1)

    assert client.get("/admin/users").status_code == 403
    assert client.get("/").status_code == 200  # still signed in, as a user
    assert other not in listed(api_get(app, token))  # only their own aliases now
    assert not stored(database, person.uid).is_admin

    # The group decides both ways: added back, admin again at the next re-check.
    slapd.set_member(ADMIN_GROUP_DN, person.dn, member=True)
    time.sleep(RECHECK + 0.1)
    assert client.get("/admin/users").status_code == 200


def test_signed_in_users_are_not_rechecked_on_every_request(slapd, database, settings,
                                                            engine_name):
    """The directory is asked at most once per interval per user, not per request."""
    person = newcomer(slapd, f"cheap-{engine_name}", admin=True)
    app = make_app(settings, **web_cfg(slapd, ldap_recheck_interval=3600))
    client = signed_in(app, person.uid, person.password)
    token = api_token(database, person.uid)
    checked = stored(database, person.uid).directory_checked_at
    assert checked is not None  # sign-in counts as a check
    slapd.ldapdelete(person.dn)
    for _ in range(3):
        assert client.get("/admin/users").status_code == 200
        assert api_get(app, token).status_code == 200
    assert stored(database, person.uid).directory_checked_at == checked


def test_an_unreachable_directory_keeps_signed_in_users_as_they_were(database, settings,
                                                                    tmp_path, caplog):
    private = SlapdInstance(tmp_path / "slapd").start()  # ours alone: it is stopped below
    try:
        standard_directory(private)
        admin = newcomer(private, "dora", admin=True)
        app = make_app(settings, **web_cfg(private))
        admin_client = signed_in(app, admin.uid, admin.password)
        user_client = signed_in(app, "alice", PEOPLE["alice"].password)
        token = api_token(database, admin.uid)
        private.set_member(ADMIN_GROUP_DN, PEOPLE["alice"].dn, member=True)

        private.stop()
        time.sleep(RECHECK + 0.1)
        with caplog.at_level(logging.WARNING, logger="aliasd.core.accounts"):
            assert admin_client.get("/admin/users").status_code == 200
            assert api_get(app, token).status_code == 200
            # Nothing new is granted either: alice was made admin while we could not ask.
            assert user_client.get("/admin/users").status_code == 403
            assert user_client.get("/").status_code == 200
        assert "cannot re-check directory user 'dora'" in caplog.text
        assert stored(database, admin.uid).is_admin
        assert not stored(database, "alice").is_admin

        # Back up: what changed meanwhile takes effect at the next re-check.
        private.start()
        private.ldapdelete(admin.dn)
        time.sleep(RECHECK + 0.1)
        assert api_get(app, token).status_code == 401
        assert admin_client.get("/admin/users").status_code == 302
        assert user_client.get("/admin/users").status_code == 200
    finally:
        private.stop()


def test_a_search_the_directory_refuses_does_not_count_as_a_removal(slapd, database,
                                                                    settings, engine_name):
    """A search base that is wrong (or hidden from the service account) says nothing
    about the user: they keep their session; only a search that runs and finds no
    entry removes them."""
    person = newcomer(slapd, f"kept-{engine_name}", admin=True)
    app = make_app(settings, **web_cfg(slapd))
    client = signed_in(app, person.uid, person.password)
    app.config["ALIASD_SETTINGS"] = app.config["ALIASD_SETTINGS"].with_overrides(
        ldap_base_dn="ou=nowhere," + BASE_DN)
    time.sleep(RECHECK + 0.1)
    assert client.get("/admin/users").status_code == 200
    user = stored(database, person.uid)
    assert user.directory_missing_since is None and user.is_admin


def test_local_accounts_are_not_checked_against_the_directory(database, settings):
    # A directory that cannot be reached: a local account is not affected at all.
    cfg = dict(ldap_uri=f"ldap://127.0.0.1:{free_port()}/", ldap_base_dn=BASE_DN,
               ldap_timeout=1.0, ldap_recheck_interval=RECHECK)
    add_user(database, "root", admin=True)
    app = make_app(settings, **cfg)
    client = signed_in(app, "root")
    token = api_token(database, "root")
    time.sleep(RECHECK + 0.1)
    assert client.get("/admin/users").status_code == 200
    assert api_get(app, token).status_code == 200
    user = stored(database, "root")
    assert user.directory_checked_at is None and user.directory_missing_since is None

"""LDAP sign-in against a real slapd on loopback: search-then-bind (service account and
anonymous), DN template, admin group, names with special characters, filter injection,
StartTLS and ldaps:// with a private CA (and refusal without it), directory down; through the web login, first sign-in creates the user and later ones
refresh the mailbox (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aliasd.config import load_settings
from aliasd.core.auth import LdapUnavailable, SignInOutcome, authenticate, ldap_authenticate
from aliasd.models import LoginAttempt, User
from tests.harness.net import free_port
from tests.harness.slapd import (
    ADMIN_GROUP_DN,
    BASE_DN,
    PEOPLE,
    SERVICE_DN,
    SERVICE_PW,
    SlapdInstance,
    standard_directory,
)
from tests.harness.webapp import csrf_from, make_app

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

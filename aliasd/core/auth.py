"""Sign-in: local accounts (argon2) and LDAP (ldap3), with a rate limit on failures
per user name and per client address kept in the database, so it holds across
gunicorn workers and hosts. No Flask here."""

from __future__ import annotations

import datetime as dt
import enum
import ssl
import unicodedata
from dataclasses import dataclass

import ldap3
from ldap3.core import exceptions as ldap_exc
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.core.addresses import AddressError, normalize_address
from aliasd.core.aliases import create_user
from aliasd.core.errors import AliasdError
from aliasd.core.passwords import hash_password, needs_rehash, verify_password
from aliasd.models import LoginAttempt, User, utcnow

MAX_USERNAME = 255
MAX_PASSWORD = 1024


class SignInOutcome(enum.StrEnum):
    OK = "ok"
    BAD_CREDENTIALS = "bad-credentials"
    RATE_LIMITED = "rate-limited"
    UNAVAILABLE = "unavailable"  # the directory cannot be reached: not the user's fault


@dataclass
class AuthResult:
    outcome: SignInOutcome
    user: User | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome == SignInOutcome.OK


@dataclass
class LdapIdentity:
    username: str
    dn: str
    mail: str
    is_admin: bool


class LdapUnavailable(Exception):
    """The directory could not be asked (down, TLS failure, bad service account)."""


# --- rate limit ----------------------------------------------------------------------
def counted_name(username: str) -> str:
    """The name a failure counts against: every spelling a directory takes for the same
    name shares it. LDAP matches names loosely (RFC 4518: case folded, compatibility
    forms such as full-width letters folded, "ignorable" characters dropped, spaces
    around and between words insignificant; slapd also takes "ALİCE" for "alice"), so
    a counter per exact spelling would give each spelling its own allowance."""
    text = unicodedata.normalize("NFKD", username)
    text = "".join(c for c in text
                   if not unicodedata.combining(c) and unicodedata.category(c) != "Cf")
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _keys(username: str, client: str) -> list[str]:
    return [f"user:{counted_name(username)}"[:300], f"ip:{client}"[:300]]


def _limits(settings: Settings) -> list[int]:
    # Per user name the strict limit (guessing one account from many addresses); per client
    # address a looser ceiling, so people sharing one NAT address are not all locked out
    # by a few typos, while one address still cannot try names without end.
    return [settings.login_rate_limit, settings.login_rate_limit_per_client]


def is_rate_limited(session: Session, settings: Settings, username: str, client: str,
                    *, now: dt.datetime | None = None) -> bool:
    since = (now or utcnow()) - dt.timedelta(seconds=settings.login_rate_window)
    for key, limit in zip(_keys(username, client), _limits(settings), strict=True):
        count = session.scalar(
            select(func.count()).select_from(LoginAttempt)
            .where(LoginAttempt.key == key, LoginAttempt.at >= since)
        )
        if count >= limit:
            return True
    return False


def record_failure(session: Session, username: str, client: str) -> None:
    now = utcnow()
    for key in _keys(username, client):
        session.add(LoginAttempt(key=key, at=now))


def prune_attempts(session: Session, settings: Settings) -> None:
    cutoff = utcnow() - dt.timedelta(seconds=settings.login_rate_window)
    session.execute(delete(LoginAttempt).where(LoginAttempt.at < cutoff))


# --- LDAP ----------------------------------------------------------------------------
def _ldap_server(settings: Settings) -> ldap3.Server:
    # Certificates are always verified (name and chain); a private CA goes in ldap_ca_file.
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=settings.ldap_ca_file or None)
    # ldap3 rejects the trailing "/" that LDAP URIs usually carry (ldap://host:389/).
    uri = settings.ldap_uri.strip().rstrip("/")
    try:
        return ldap3.Server(uri, connect_timeout=settings.ldap_timeout, tls=tls,
                            get_info=ldap3.NONE)
    except ldap_exc.LDAPException as exc:
        raise LdapUnavailable(f"bad ldap_uri {settings.ldap_uri!r}: {exc}") from exc


def _connect(settings: Settings, server: ldap3.Server, user: str | None,
             password: str | None) -> ldap3.Connection | None:
    """A bound connection, or None when the directory refuses these credentials."""
    conn = ldap3.Connection(
        server,
        user=user,
        password=password,
        receive_timeout=max(1, int(round(settings.ldap_timeout))),  # ldap3 needs an int
        raise_exceptions=False,
        read_only=True,
    )
    try:
        conn.open()
        if (settings.ldap_starttls and not settings.ldap_uri.lower().startswith("ldaps://")
                and not conn.start_tls()):
            # Never go on in clear text when TLS was asked for.
            raise LdapUnavailable(f"StartTLS failed: {conn.result}")
        if not conn.bind():
            if conn.closed:
                raise LdapUnavailable(f"the directory closed the connection: {conn.result}")
            return None
    except (ldap_exc.LDAPException, OSError) as exc:  # ssl.SSLError is an OSError
        raise LdapUnavailable(str(exc)) from exc
    return conn


def _first(entry_attrs: dict, name: str) -> str | None:
    value = entry_attrs.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value else None


def _service_connection(settings: Settings, server: ldap3.Server) -> ldap3.Connection:
    """Bound as the service account, or anonymously when there is none."""
    conn = _connect(settings, server, settings.ldap_bind_dn or None,
                    settings.ldap_bind_password or None)
    if conn is None:
        raise LdapUnavailable("the directory refused the service account")
    return conn


def _find_entry(settings: Settings, conn: ldap3.Connection, username: str) -> dict | None:
    """The entry sign-in takes for ``username`` (the DN template's entry, or the one
    match of ``ldap_user_filter`` under ``ldap_base_dn``); None when there is none or
    more than one. Sign-in and the periodic re-check both ask this, so they cannot
    disagree on who still exists. A refused or failed search raises LdapUnavailable:
    it says nothing about the user."""
    attrs = [settings.ldap_mail_attribute, "uid"]
    try:
        if settings.ldap_user_dn_template:
            user_dn = settings.ldap_user_dn_template.format(username=escape_rdn(username))
            conn.search(user_dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=attrs)
            missing = {32}  # noSuchObject: the entry is gone
        else:
            flt = settings.ldap_user_filter.format(username=escape_filter_chars(username))
            conn.search(settings.ldap_base_dn, flt, search_scope=ldap3.SUBTREE,
                        attributes=attrs, size_limit=2)
            missing = {4}  # sizeLimitExceeded: ambiguous, never guess which one
    except (ldap_exc.LDAPException, OSError) as exc:
        raise LdapUnavailable(str(exc)) from exc
    code = (conn.result or {}).get("result")
    if code in missing:
        return None
    if code != 0:
        raise LdapUnavailable(f"the directory search failed: {conn.result}")
    found = [e for e in (conn.response or []) if e.get("type") == "searchResEntry"]
    return found[0] if len(found) == 1 else None


def _identity(settings: Settings, server: ldap3.Server, username: str,
              entry: dict) -> LdapIdentity:
    entry_attrs = entry.get("attributes", {})
    return LdapIdentity(
        username=_first(entry_attrs, "uid") or username,
        dn=entry["dn"],
        mail=_first(entry_attrs, settings.ldap_mail_attribute) or "",
        is_admin=_is_admin(settings, server, entry["dn"]),
    )


def ldap_authenticate(settings: Settings, username: str, password: str) -> LdapIdentity | None:
    """Search-then-bind (service account or anonymous) or bind through a DN template.
    Returns None for unknown users or wrong passwords; raises LdapUnavailable when the
    directory cannot answer."""
    if not password:
        return None  # an empty password would be an unauthenticated bind that "succeeds"
    server = _ldap_server(settings)
    if settings.ldap_user_dn_template:
        user_dn = settings.ldap_user_dn_template.format(username=escape_rdn(username))
        conn = _connect(settings, server, user_dn, password)
        if conn is None:
            return None
        try:
            entry = _find_entry(settings, conn, username)
        finally:
            conn.unbind()
    else:
        service = _service_connection(settings, server)
        try:
            entry = _find_entry(settings, service, username)
        finally:
            service.unbind()
        if entry is None:
            return None
        conn = _connect(settings, server, entry["dn"], password)
        if conn is None:
            return None
        conn.unbind()
    if entry is None:
        return None
    return _identity(settings, server, username, entry)


def ldap_lookup(settings: Settings, username: str) -> LdapIdentity | None:
    """What the directory says about ``username`` now, without their password: the
    entry sign-in would take (read as the service account, or anonymously) and the
    admin flag sign-in would give. None when sign-in would find no entry; raises
    LdapUnavailable when the directory cannot answer."""
    server = _ldap_server(settings)
    service = _service_connection(settings, server)
    try:
        entry = _find_entry(settings, service, username)
    finally:
        service.unbind()
    return None if entry is None else _identity(settings, server, username, entry)


def _is_admin(settings: Settings, server: ldap3.Server, user_dn: str) -> bool:
    """The one rule for a directory user's admin role: membership of the groupOfNames
    ``ldap_admin_group_dn`` (no group configured: nobody)."""
    if not settings.ldap_admin_group_dn:
        return False
    conn = _service_connection(settings, server)
    try:
        conn.search(
            settings.ldap_admin_group_dn,
            f"(member={escape_filter_chars(user_dn)})",
            search_scope=ldap3.BASE,
            attributes=["cn"],
        )
        return any(e.get("type") == "searchResEntry" for e in (conn.response or []))
    except (ldap_exc.LDAPException, OSError) as exc:
        raise LdapUnavailable(str(exc)) from exc
    finally:
        conn.unbind()


# --- sign-in -------------------------------------------------------------------------
def authenticate(session: Session, settings: Settings, username: str, password: str,
                 client: str) -> AuthResult:
    """Check credentials, honouring the rate limit; creates or refreshes LDAP users.
    The caller commits the session (failures are recorded in it)."""
    username = (username or "").strip()
    password = password or ""
    if not username or len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
        return AuthResult(SignInOutcome.BAD_CREDENTIALS, message="Wrong user name or password.")
    if is_rate_limited(session, settings, username, client):
        return AuthResult(
            SignInOutcome.RATE_LIMITED,
            message="Too many failed sign-ins. Wait a few minutes and try again.",
        )
    user = session.scalar(select(User).where(User.username == username))
    if user is not None and user.auth_source == "local":
        if not user.password_hash:
            # No password set yet: the same work as a real check, and never a match.
            verify_password(_dummy_hash(), password)
        elif verify_password(user.password_hash, password):
            if needs_rehash(user.password_hash or ""):
                user.password_hash = hash_password(password)
            user.last_login_at = utcnow()
            return AuthResult(SignInOutcome.OK, user)
    elif not settings.ldap_uri:
        # Same work as for a real account, so timing does not tell which names exist
        # (unknown, or a directory user while LDAP is switched off).
        verify_password(_dummy_hash(), password)
    else:
        try:
            identity = ldap_authenticate(settings, username, password)
        except LdapUnavailable:
            return AuthResult(
                SignInOutcome.UNAVAILABLE,
                message="The directory cannot be reached right now; try again later.",
            )
        if identity is not None:
            return _ldap_user(session, identity)
    record_failure(session, username, client)
    return AuthResult(SignInOutcome.BAD_CREDENTIALS, message="Wrong user name or password.")


_DUMMY: list[str] = []


def _dummy_hash() -> str:
    if not _DUMMY:
        _DUMMY.append(hash_password("not a real password"))
    return _DUMMY[0]


def _ldap_user(session: Session, identity: LdapIdentity) -> AuthResult:
    try:
        mailbox = normalize_address(identity.mail)
    except AddressError:
        return AuthResult(
            SignInOutcome.BAD_CREDENTIALS,
            message="Your directory entry has no usable mail address; ask an administrator.",
        )
    user = session.scalar(select(User).where(User.username == identity.username))
    if user is None:
        try:
            user = create_user(session, identity.username, mailbox, is_admin=identity.is_admin,
                               auth_source="ldap")
        except AliasdError as exc:
            return AuthResult(
                SignInOutcome.BAD_CREDENTIALS,
                message=f"Your directory user name cannot be used here ({exc}); ask an administrator.",
            )
    elif user.auth_source != "ldap":
        # A local account of the same name is not taken over by the directory.
        return AuthResult(SignInOutcome.BAD_CREDENTIALS, message="Wrong user name or password.")
    else:
        user.mailbox = mailbox
        user.is_admin = identity.is_admin
    # The directory just vouched for the user: this counts as a re-check.
    user.last_login_at = user.directory_checked_at = utcnow()
    user.directory_missing_since = None
    return AuthResult(SignInOutcome.OK, user)

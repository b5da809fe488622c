"""Users, domains and aliases: creation and lifecycle rules. Every write that changes
what Postfix must be told also appends to the change feed read by lookupd."""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections.abc import Iterable, Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aliasd.core import catch_all_gate
from aliasd.core.addresses import (
    AddressError,
    looks_like_hostname,
    normalize_address,
    normalize_domain,
    parse_address,
    site_from_input,
)
from aliasd.core.errors import (
    AddressRetired,
    AliasdError,
    AlreadyExists,
    InvalidTransition,
    NotFound,
)
from aliasd.models import (
    Alias,
    AliasChange,
    AliasOrigin,
    AliasState,
    CatchAllPolicy,
    Domain,
    ReverseAlias,
    User,
    utcnow,
)


# --- change feed --------------------------------------------------------------------
def record_change(session: Session, address: str | None) -> None:
    """Tell every lookupd that ``address`` changed (None: reload everything)."""
    session.add(AliasChange(address=address))


# --- users --------------------------------------------------------------------------
# Shown wherever people pick a user (owner columns, the top bar): no markup or path
# characters, and nothing invisible or reordering (a right-to-left override shows
# "\u202egnp.exe" as "exe.png").
_USERNAME_PUNCTUATION = set("<>\"`\\/")


def check_username(username: str) -> str:
    """The user name as stored, or AliasdError saying what is wrong with it."""
    username = (username or "").strip()
    if not username or len(username) > 255:
        raise AliasdError("a user name must be 1 to 255 characters")
    for c in username:
        category = unicodedata.category(c)
        if category[0] in "CZ":  # control, format, unassigned, private use; any space
            raise AliasdError(
                f"a user name must not contain spaces or invisible characters (U+{ord(c):04X})")
        if c in _USERNAME_PUNCTUATION:
            raise AliasdError(f"a user name must not contain {c!r}")
    return username


def create_user(
    session: Session,
    username: str,
    mailbox: str,
    *,
    is_admin: bool = False,
    password_hash: str | None = None,
    auth_source: str = "local",
) -> User:
    username = check_username(username)
    try:
        mailbox = normalize_address(mailbox)
    except AddressError as exc:  # callers catch AliasdError; keep the reason
        raise AliasdError(f"mailbox: {exc}") from exc
    if session.scalar(select(User).where(User.username == username)):
        raise AlreadyExists(f"user {username!r} already exists")
    user = User(
        username=username,
        mailbox=mailbox,
        is_admin=is_admin,
        password_hash=password_hash,
        auth_source=auth_source,
    )
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user named {username!r}")
    return user


# --- domains ------------------------------------------------------------------------
def create_domain(
    session: Session,
    name: str,
    owner: User,
    *,
    catch_all: str = CatchAllPolicy.REJECT.value,
    catch_all_regex: str | None = None,
    catch_all_max_per_hour: int | None = None,
) -> Domain:
    try:
        name = normalize_domain(name)
    except AddressError as exc:
        raise AliasdError(str(exc)) from exc
    policy = _policy(catch_all)
    _check_regex(catch_all_regex)
    _check_cap(catch_all_max_per_hour)
    if session.scalar(select(Domain).where(Domain.name == name)):
        raise AlreadyExists(f"domain {name} is already managed")
    domain = Domain(
        name=name,
        owner=owner,
        catch_all=policy,
        catch_all_regex=catch_all_regex or None,
        catch_all_max_per_hour=catch_all_max_per_hour,
    )
    session.add(domain)
    session.flush()
    record_change(session, None)
    return domain


def list_domains(session: Session) -> list[Domain]:
    return list(session.scalars(select(Domain).order_by(Domain.name)))


def get_domain(session: Session, name: str) -> Domain:
    try:
        name = normalize_domain(name)
    except AddressError as exc:
        raise NotFound(str(exc)) from exc
    domain = session.scalar(select(Domain).where(Domain.name == name))
    if domain is None:
        raise NotFound(f"{name} is not a domain aliasd manages")
    return domain


DOMAIN_FIELDS = ("catch_all", "catch_all_regex", "catch_all_max_per_hour")
MAX_GATE_REGEX = catch_all_gate.MAX_GATE_REGEX


def update_domain(session: Session, domain: Domain, **fields) -> Domain:
    """Change the catch-all policy, regex gate (empty or None: no gate) and hourly cap
    (None: no cap). Every value is checked before any is set."""
    unknown = set(fields) - set(DOMAIN_FIELDS)
    if unknown:
        raise AliasdError(f"a domain has no setting {', '.join(sorted(unknown))}")
    if "catch_all" in fields:
        fields["catch_all"] = _policy(fields["catch_all"])
    if "catch_all_regex" in fields:
        fields["catch_all_regex"] = fields["catch_all_regex"] or None
        _check_regex(fields["catch_all_regex"])
    if "catch_all_max_per_hour" in fields:
        _check_cap(fields["catch_all_max_per_hour"])
    for key, value in fields.items():
        setattr(domain, key, value)
    record_change(session, None)
    return domain


def _check_regex(regex: str | None) -> None:
    """The catch-all gate: a regular expression the whole local part must match."""
    if not regex:
        return
    try:
        catch_all_gate.check(regex)
    except catch_all_gate.GateError as exc:
        raise AliasdError(str(exc)) from exc


def _check_cap(cap: int | None) -> None:
    if cap is not None and not 0 <= cap <= 1_000_000:
        raise AliasdError("the catch-all cap must be 0 to 1000000 new aliases per hour")


def _policy(value: str) -> str:
    try:
        return CatchAllPolicy(value).value
    except ValueError as exc:
        choices = ", ".join(p.value for p in CatchAllPolicy)
        raise AliasdError(f"catch-all policy must be one of {choices}, not {value!r}") from exc


# --- aliases ------------------------------------------------------------------------
REVERSE_ALIAS_PREFIX = "ra-"
# Local parts no alias may have, on any domain: SRS addresses (srs0=/srs1=, what lookupd's
# SRS maps answer) and reverse aliases (ra-...). An alias there would shadow one of them.
RESERVED_LOCAL_PREFIXES = ("srs0=", "srs1=", REVERSE_ALIAS_PREFIX)


def is_reserved_local(local: str) -> bool:
    return local.lower().startswith(RESERVED_LOCAL_PREFIXES)


# Postfix reads a tcp_table reply of at most 4,096 bytes, where every byte outside
# printable ASCII takes three: a list past these bounds would be answered "temporary
# failure" for ever, and its mail deferred until it bounced.
MAX_DESTINATIONS = 20
MAX_DESTINATIONS_BYTES = 1300


def normalize_destinations(destinations: Iterable[str]) -> list[str]:
    result: list[str] = []
    for dest in destinations:
        for part in str(dest).split(","):
            part = part.strip()
            if not part:
                continue
            try:
                address = normalize_address(part)
            except AddressError as exc:
                raise AliasdError(f"destination {part!r}: {exc}") from exc
            if address not in result:
                result.append(address)
    if not result:
        raise AliasdError("an alias needs at least one destination")
    if len(result) > MAX_DESTINATIONS:
        raise AliasdError(f"an alias forwards to at most {MAX_DESTINATIONS} destinations, "
                          f"not {len(result)}")
    if len(",".join(result).encode()) > MAX_DESTINATIONS_BYTES:
        raise AliasdError(f"the destinations are too long together (at most "
                          f"{MAX_DESTINATIONS_BYTES} bytes)")
    return result


def get_alias(session: Session, address: str, *, delimiter: str = "") -> Alias:
    try:
        key = normalize_address(address, delimiter)
    except AddressError as exc:
        raise NotFound(str(exc)) from exc
    alias = session.scalar(select(Alias).where(Alias.address == key))
    if alias is None:
        raise NotFound(f"no alias {key}")
    return alias


def create_alias(
    session: Session,
    address: str,
    owner: User,
    *,
    site: str | None = None,
    destinations: Sequence[str] | None = None,
    origin: str = AliasOrigin.CLI.value,
    note: str | None = None,
) -> Alias:
    """Create an active alias on a managed domain; raises AliasdError subclasses with
    messages fit for users (duplicate, retired address, unknown domain, bad input)."""
    try:
        parsed = parse_address(address, delimiter="")
    except AddressError as exc:
        raise AliasdError(str(exc)) from exc
    domain = session.scalar(select(Domain).where(Domain.name == parsed.domain))
    if domain is None:
        raise NotFound(f"{parsed.domain} is not a domain aliasd manages")
    if is_reserved_local(parsed.local):
        raise AliasdError(f"{parsed.local}@: local parts starting "
                          f"{', '.join(RESERVED_LOCAL_PREFIXES)} are kept for SRS and "
                          "reverse aliases")
    key = str(parsed)
    existing = session.scalar(select(Alias).where(Alias.address == key))
    if existing is not None:
        if existing.state in (AliasState.BURNED, AliasState.DELETED):
            raise AddressRetired(
                f"{key} was {existing.state} and is never handed out again"
            )
        raise AlreadyExists(f"{key} already exists")
    if site:
        try:
            site = site_from_input(site)
        except AddressError as exc:
            raise AliasdError(str(exc)) from exc
    dests = normalize_destinations(destinations or [owner.mailbox])
    alias = Alias(
        address=key,
        domain=domain,
        owner=owner,
        site=site,
        destinations=",".join(dests),
        state=AliasState.ACTIVE.value,
        origin=AliasOrigin(origin).value,
        note=(note or None),
    )
    session.add(alias)
    try:
        session.flush()
    except IntegrityError as exc:  # lost a race with another writer
        raise AlreadyExists(f"{key} already exists") from exc
    record_change(session, key)
    return alias


_TRANSITIONS: dict[str, set[str]] = {
    AliasState.ACTIVE: {AliasState.DISABLED, AliasState.BURNED, AliasState.DELETED},
    AliasState.DISABLED: {AliasState.ACTIVE, AliasState.BURNED, AliasState.DELETED},
    AliasState.BURNED: {AliasState.DELETED},
    AliasState.DELETED: set(),
}


def set_state(session: Session, alias: Alias, state: str) -> Alias:
    """Move an alias through its lifecycle. Burned never comes back; deleted keeps a
    tombstone so the catch-all never brings the address back (see :func:`forget`)."""
    target = AliasState(state)
    current = AliasState(alias.state)
    if target == current:
        return alias
    if target not in _TRANSITIONS[current]:
        raise InvalidTransition(f"{alias.address} is {current}; it cannot become {target}")
    alias.state = target.value
    alias.updated_at = utcnow()
    record_change(session, alias.address)
    return alias


def set_destinations(session: Session, alias: Alias, destinations: Sequence[str]) -> Alias:
    alias.destinations = ",".join(normalize_destinations(destinations))
    alias.updated_at = utcnow()
    record_change(session, alias.address)
    return alias


def forget(session: Session, alias: Alias) -> None:
    """Remove an alias and its tombstone: the address may be created again."""
    address = alias.address
    # Its reverse aliases go with it (ON DELETE CASCADE): lookupd must forget them too.
    for reverse in session.scalars(
        select(ReverseAlias.address).where(ReverseAlias.alias_id == alias.id)
    ):
        record_change(session, reverse)
    session.delete(alias)
    record_change(session, address)


# --- catch-all ----------------------------------------------------------------------
class CatchAllDeferred(AliasdError):
    """The domain's hourly cap on new aliases is reached: Postfix should retry later."""


def catch_all_create(
    session: Session, domain: Domain, local: str, *, now: dt.datetime | None = None
) -> Alias | None:
    """Create the alias for first mail to ``local@domain`` when the domain's policy allows.

    Returns None when the policy refuses (reject policy, regex mismatch, retired address);
    raises CatchAllDeferred past the hourly cap."""
    if domain.catch_all != CatchAllPolicy.CREATE:
        return None
    if is_reserved_local(local):
        return None
    if not catch_all_gate.admits(domain.catch_all_regex, local):
        return None
    address = f"{local}@{domain.name}"
    existing = session.scalar(select(Alias).where(Alias.address == address))
    if existing is not None:
        return existing if existing.state == AliasState.ACTIVE else None
    if session.scalar(select(User.id).where(User.mailbox == address).limit(1)) is not None:
        # Postfix re-queries every destination: a user's own mailbox is not an alias.
        return None
    if domain.catch_all_max_per_hour is not None:
        # Serialise creations on this domain until commit (a row lock on PostgreSQL, the
        # write lock on SQLite), so concurrent lookupd workers cannot all pass the count.
        session.execute(
            update(Domain)
            .where(Domain.id == domain.id)
            .values(catch_all_max_per_hour=Domain.catch_all_max_per_hour)
            .execution_options(synchronize_session=False)
        )
        since = (now or utcnow()) - dt.timedelta(hours=1)
        created = session.scalar(
            select(func.count())
            .select_from(Alias)
            .where(
                Alias.domain_id == domain.id,
                Alias.origin == AliasOrigin.CATCH_ALL.value,
                Alias.created_at >= since,
            )
        )
        if created >= domain.catch_all_max_per_hour:
            raise CatchAllDeferred(
                f"{domain.name} reached its cap of {domain.catch_all_max_per_hour} new aliases per hour"
            )
    owner = domain.owner
    site = local if looks_like_hostname(local) else None
    return create_alias(
        session,
        address,
        owner,
        site=site,
        destinations=[owner.mailbox],
        origin=AliasOrigin.CATCH_ALL.value,
    )


def prune_changes(session: Session, older_than: dt.timedelta = dt.timedelta(days=1)) -> int:
    cutoff = utcnow() - older_than
    result = session.execute(delete(AliasChange).where(AliasChange.changed_at < cutoff))
    return result.rowcount or 0

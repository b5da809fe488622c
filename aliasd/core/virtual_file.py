"""Import and export of Postfix ``virtual(5)`` files.

The syntax follows Postfix's own reader (``postmap``): a logical line starts with
non-whitespace text and continues over following lines that start with whitespace;
empty lines and lines whose first non-whitespace character is ``#`` are ignored
(also in the middle of a continued line); the key ends at the first whitespace and
the rest is a list of addresses separated by commas and/or whitespace. ``#`` anywhere
else is ordinary text, as in Postfix.

Importing is built for whole files of 100,000 lines: addresses are checked in Python
against sets pre-loaded from the database, rows go in with bulk ``INSERT``s, and the
change feed gets one "reload everything" row instead of one row per alias."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from aliasd.core.addresses import AddressError, looks_like_hostname, parse_address
from aliasd.core.aliases import record_change
from aliasd.core.bounded_lines import clip
from aliasd.models import Alias, AliasOrigin, AliasState, Domain, User, utcnow

_SPLIT = re.compile(r"[,\s]+")
CHUNK = 5000  # rows per INSERT ... VALUES batch: big enough to be fast, small enough for PG

RETIRED = (AliasState.BURNED.value, AliasState.DELETED.value)


@dataclass(frozen=True)
class VirtualEntry:
    """One logical line: the key and its destinations, as written in the file."""

    line: int
    key: str
    destinations: tuple[str, ...]


@dataclass(frozen=True)
class LineProblem:
    """A line that was not imported, and why."""

    line: int
    reason: str


# --- parsing ------------------------------------------------------------------------
def logical_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(first line number, text)`` per logical line, as Postfix joins them:
    the newline goes, the continuation's leading whitespace stays."""
    start = 0
    buf: list[str] = []
    for number, raw in enumerate(lines, 1):
        text = raw.rstrip("\r\n")
        stripped = text.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        if text[0].isspace():
            if buf:
                buf.append(text)
                continue
            # Postfix warns and drops such a line; we report it like any other bad line.
            yield number, text
            continue
        if buf:
            yield start, "".join(buf)
        start, buf = number, [text]
    if buf:
        yield start, "".join(buf)


def parse_virtual(lines: Iterable[str]) -> tuple[list[VirtualEntry], list[LineProblem]]:
    """Split a virtual file into entries; syntax problems are returned, not raised."""
    entries: list[VirtualEntry] = []
    problems: list[LineProblem] = []
    for number, text in logical_lines(lines):
        if _has_undecodable(text):
            problems.append(LineProblem(number, "the line is not valid UTF-8"))
            continue
        if text[0].isspace():
            problems.append(
                LineProblem(number, "a continuation line (starting with whitespace) with no line before it")
            )
            continue
        parts = text.split(None, 1)
        key = parts[0]
        dests = tuple(d for d in _SPLIT.split(parts[1]) if d) if len(parts) > 1 else ()
        if not dests:
            problems.append(LineProblem(number, f"{clip(key)}: no destination (expected 'address dest[, dest...]')"))
            continue
        entries.append(VirtualEntry(number, key, dests))
    return entries, problems


def _has_undecodable(text: str) -> bool:
    # Files are read with errors="surrogateescape": bad bytes become lone surrogates,
    # so one broken line is reported instead of the whole file being refused.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# --- import -------------------------------------------------------------------------
@dataclass
class ImportReport:
    imported: int = 0
    updated: int = 0
    duplicates: list[LineProblem] = field(default_factory=list)
    errors: list[LineProblem] = field(default_factory=list)
    entries: int = 0  # logical lines with a key and destinations

    @property
    def problems(self) -> list[LineProblem]:
        return sorted(self.duplicates + self.errors, key=lambda p: p.line)


def import_virtual(
    session: Session,
    lines: Iterable[str],
    *,
    owner: User | None = None,
    site_from_local: bool = False,
    update_existing: bool = False,
) -> ImportReport:
    """Import a virtual file into ``session`` (the caller commits).

    Only addresses on managed domains are imported; the owner is ``owner`` or else
    the domain's owner; origin is ``import``. An address that already exists is a
    duplicate and is skipped, or with ``update_existing`` gets the file's destinations
    (its state is kept). Burned and deleted addresses are never brought back."""
    entries, syntax_problems = parse_virtual(lines)
    report = ImportReport(errors=list(syntax_problems), entries=len(entries))

    domains = {
        name: (domain_id, owner_id)
        for name, domain_id, owner_id in session.execute(
            select(Domain.name, Domain.id, Domain.owner_id)
        )
    }
    existing = {
        address: (alias_id, state, dests)
        for address, alias_id, state, dests in session.execute(
            select(Alias.address, Alias.id, Alias.state, Alias.destinations)
        )
    }
    seen: dict[str, int] = {}
    now = utcnow()
    new_rows: list[dict] = []
    updates: list[dict] = []
    dest_cache: dict[str, str] = {}

    for entry in entries:
        problem = _check_key(entry, domains)
        if isinstance(problem, LineProblem):
            report.errors.append(problem)
            continue
        address, local, domain = problem
        if address in seen:
            report.duplicates.append(
                LineProblem(entry.line, f"{address}: duplicate of line {seen[address]}, skipped")
            )
            continue
        seen[address] = entry.line
        dests = _check_destinations(entry, address, dest_cache)
        if isinstance(dests, LineProblem):
            report.errors.append(dests)
            continue
        old = existing.get(address)
        if old is not None:
            alias_id, state, old_dests = old
            if state in RETIRED:
                report.errors.append(
                    LineProblem(entry.line, f"{address} was {state} and is never handed out again")
                )
            elif not update_existing:
                report.duplicates.append(
                    LineProblem(entry.line, f"{address}: already exists, skipped (--update replaces its destinations)")
                )
            elif old_dests != dests:
                updates.append({"id": alias_id, "destinations": dests, "updated_at": now})
            continue
        domain_id, domain_owner_id = domains[domain]
        new_rows.append(
            {
                "address": address,
                "domain_id": domain_id,
                "owner_id": owner.id if owner is not None else domain_owner_id,
                "site": local if site_from_local and looks_like_hostname(local) else None,
                "destinations": dests,
                "state": AliasState.ACTIVE.value,
                "origin": AliasOrigin.IMPORT.value,
                "created_at": now,
                "updated_at": now,
                "forwarded_count": 0,
                "spam_count": 0,
                "rejected_count": 0,
            }
        )

    table = Alias.__table__
    _bulk_insert(session, new_rows)
    if updates:
        session.execute(
            update(table).where(table.c.id == _bind("id")).values(
                destinations=_bind("destinations"), updated_at=_bind("updated_at")
            ),
            [{"b_id": u["id"], "b_destinations": u["destinations"], "b_updated_at": u["updated_at"]} for u in updates],
        )
    report.imported = len(new_rows)
    report.updated = len(updates)
    if new_rows or updates:
        record_change(session, None)  # one "reload all" for lookupd, not 100,000 rows
    session.flush()
    return report


def _bulk_insert(session: Session, rows: list[dict]) -> None:
    """Insert many alias rows in the session's transaction. PostgreSQL gets COPY (psycopg
    otherwise sends one INSERT per row: ~3x slower); elsewhere batched executemany. The
    values are already normalised, so skipping the column types' bind processing is safe."""
    if not rows:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg":
        columns = list(rows[0])
        driver = conn.connection.driver_connection  # psycopg.Connection, same transaction
        sql = f"COPY {Alias.__tablename__} ({', '.join(columns)}) FROM STDIN"
        with driver.cursor() as cur, cur.copy(sql) as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])
        return
    table = Alias.__table__
    for start in range(0, len(rows), CHUNK):
        session.execute(insert(table), rows[start : start + CHUNK])


def _bind(name: str):
    # Bind names must differ from column names in an executemany UPDATE.
    return bindparam("b_" + name)


def _shown(text: str) -> str:
    """File text as quoted in a message: printable, at most ~100 characters."""
    return clip(text)


def _check_key(entry: VirtualEntry, domains: dict) -> LineProblem | tuple[str, str, str]:
    key = _shown(entry.key)
    if key.startswith("@"):
        return LineProblem(
            entry.line,
            f"{key}: catch-all entries are not imported; use 'aliasd domain set --catch-all'",
        )
    if "@" not in key:
        return LineProblem(entry.line, f"{key}: not a full address (aliasd keys are user@domain)")
    try:
        parsed = parse_address(entry.key, delimiter="")
    except AddressError as exc:
        return LineProblem(entry.line, f"{key}: {clip(str(exc))}")
    if parsed.domain not in domains:
        return LineProblem(entry.line, f"{key}: {parsed.domain} is not a domain aliasd manages")
    return str(parsed), parsed.local, parsed.domain


def _check_destinations(
    entry: VirtualEntry, address: str, cache: dict[str, str]
) -> LineProblem | str:
    result: list[str] = []
    for raw in entry.destinations:
        norm = cache.get(raw)
        if norm is None:
            shown = _shown(raw)
            if raw.startswith("#"):
                return LineProblem(
                    entry.line,
                    f"{address}: destination '{shown}': '#' starts a comment only at the start of a line",
                )
            if "@" not in raw:
                return LineProblem(
                    entry.line, f"{address}: destination '{shown}' is not a full address (user@domain)"
                )
            try:
                norm = str(parse_address(raw, delimiter=""))
            except AddressError as exc:
                return LineProblem(entry.line, f"{address}: destination '{shown}': {clip(str(exc))}")
            cache[raw] = norm
        if norm == address:
            return LineProblem(entry.line, f"{address}: forwards to itself")
        if norm not in result:
            result.append(norm)
    return ",".join(result)


# --- export -------------------------------------------------------------------------
def export_rows(
    session: Session, *, owner: User | None = None, include_all: bool = False
) -> list[tuple[str, str, str]]:
    """``(address, destinations, state)`` sorted by address; only active aliases (what
    Postfix delivers) unless ``include_all``."""
    query = select(Alias.address, Alias.destinations, Alias.state)
    if owner is not None:
        query = query.where(Alias.owner_id == owner.id)
    if not include_all:
        query = query.where(Alias.state == AliasState.ACTIVE.value)
    # Sorted in Python: SQLite and PostgreSQL collations disagree, exports must not.
    return sorted((a, d, st) for a, d, st in session.execute(query))


def not_exportable(address: str, destinations: str) -> str | None:
    """Why a virtual file cannot carry this alias back (postmap and import would skip
    the line, or import refuse it), or None. '#' may begin a local part."""
    if address.startswith("#"):
        return "a virtual(5) line starting with '#' is a comment"
    for destination in destinations.split(","):
        if destination.startswith("#"):
            return f"destination '{destination}' starts with '#', which alias import refuses"
    return None


def render_virtual(rows: Iterable[tuple[str, str, str]]) -> Iterator[str]:
    """Lines of a virtual file; aliases that are not active become comments naming
    their state, so the file still feeds straight into postmap or a re-import. Active
    ones it cannot carry (:func:`not_exportable`) become "# not exported: " comments."""
    for address, destinations, state in rows:
        line = f"{address}\t{', '.join(d for d in destinations.split(',') if d)}\n"
        if state != AliasState.ACTIVE.value:
            yield f"# {state}: {line}"
        elif not_exportable(address, destinations):
            yield f"# not exported: {line}"
        else:
            yield line

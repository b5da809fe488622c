"""``aliasd alias import|export``: the virtual(5) syntax checked against real postmap,
bulk import on SQLite and PostgreSQL, export fed back to postmap, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, func, select, text

from aliasd.core import aliases as core
from aliasd.core.virtual_file import (
    export_rows,
    import_virtual,
    logical_lines,
    parse_virtual,
    render_virtual,
)
from aliasd.models import Alias, AliasChange, AliasOrigin, AliasState
from tests.harness.net import free_port
from tests.harness.postfix import postmap

TRICKY = (
    "# a comment\n"
    "a@example.net   x@y.example,\n"
    "  z@y.example\n"
    "   # an indented comment inside a continued line\n"
    "\tw@y.example\n"
    "\n"
    "   \n"
    "B@Example.NET x@y.example,z@y.example , w@y.example\r\n"
    "c@example.net\tq@y.example # not a comment here\n"
    "b@example.net dup@y.example\n"
    "@example.net catch@y.example\n"
)


# --- syntax -------------------------------------------------------------------------
def test_logical_lines_join_continuations_and_skip_comments():
    assert list(logical_lines(TRICKY.splitlines(keepends=True))) == [
        (2, "a@example.net   x@y.example,  z@y.example\tw@y.example"),
        (8, "B@Example.NET x@y.example,z@y.example , w@y.example"),
        (9, "c@example.net\tq@y.example # not a comment here"),
        (10, "b@example.net dup@y.example"),
        (11, "@example.net catch@y.example"),
    ]


def test_parse_reports_lines_without_destination_or_leading_continuation():
    entries, problems = parse_virtual([" orphan@example.net x@y.example\n", "lonely@example.net\n",
                                       "ok@example.net a@y.example b@y.example\n"])
    assert [(p.line, p.reason) for p in problems] == [
        (1, "a continuation line (starting with whitespace) with no line before it"),
        (2, "lonely@example.net: no destination (expected 'address dest[, dest...]')"),
    ]
    assert [(e.line, e.key, e.destinations) for e in entries] == [
        (3, "ok@example.net", ("a@y.example", "b@y.example"))
    ]


def test_parser_agrees_with_postmap(tmp_path):
    """The same file read by real Postfix: every key postmap stores, with the value
    split as Postfix splits a virtual result, is what the parser returns (first
    occurrence wins, like postmap's 'duplicate entry' rule)."""
    path = tmp_path / "virtual"
    path.write_text(TRICKY)
    built = postmap(f"hash:{path}")
    assert built.returncode == 0, built.stderr
    dumped = postmap("-s", f"hash:{path}")
    assert dumped.returncode == 0, dumped.stderr
    from_postfix = {}
    for line in dumped.stdout.splitlines():
        key, value = line.split("\t", 1)
        from_postfix[key] = [d for d in value.replace(",", " ").split() if d]
    entries, problems = parse_virtual(TRICKY.splitlines(keepends=True))
    assert problems == []
    ours: dict[str, list[str]] = {}
    for entry in entries:
        ours.setdefault(entry.key.lower(), list(entry.destinations))
    assert ours == from_postfix


# --- import into the database (both engines) ----------------------------------------
@pytest.fixture
def owners(database):
    with database.session() as s:
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_user(s, "alice", "alice@real.example")
        core.create_domain(s, "example.net", bob)
        core.create_domain(s, "Bücher.example", bob)
    return database


def _mapping(session) -> dict[str, str]:
    return {
        a: d for a, d in session.execute(
            select(Alias.address, Alias.destinations).where(Alias.state == AliasState.ACTIVE.value)
        )
    }


def test_import_reports_bad_lines_and_imports_the_rest(owners):
    text = (
        "github.com@Example.NET a@y.example,\n"  # 1
        "   b@y.example\n"  # 2
        "shop@bücher.example a@y.example\n"  # 3
        "x@unmanaged.example a@y.example\n"  # 4
        "@example.net a@y.example\n"  # 5
        "plainuser a@y.example\n"  # 6
        "a,b@example.net a@y.example\n"  # 7
        "loop@example.net loop@example.net\n"  # 8
        "bad.dest@example.net nobody\n"  # 9
        "GITHUB.COM@example.net c@y.example\n"  # 10
        "news@example.net a@y.example # hi\n"  # 11
        "ok@example.net A@Y.example a@y.example\n"  # 12
        "broken\udcff@example.net a@y.example\n"  # 13 (an undecodable byte)
    )
    with owners.session() as s:
        report = import_virtual(s, text.splitlines(keepends=True), site_from_local=True)
    assert (report.imported, report.updated) == (3, 0)
    assert [(p.line, p.reason) for p in report.duplicates] == [
        (10, "github.com@example.net: duplicate of line 1, skipped")
    ]
    reasons = {p.line: p.reason for p in report.errors}
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 11, 13]
    assert "unmanaged.example is not a domain aliasd manages" in reasons[4]
    assert "catch-all entries are not imported" in reasons[5]
    assert "not a full address" in reasons[6]
    assert "must not contain a comma" in reasons[7]
    assert "forwards to itself" in reasons[8]
    assert "destination 'nobody' is not a full address" in reasons[9]
    assert "'#' starts a comment only at the start of a line" in reasons[11]
    assert "not valid UTF-8" in reasons[13]
    with owners.session() as s:
        assert _mapping(s) == {
            "github.com@example.net": "a@y.example,b@y.example",
            "shop@xn--bcher-kva.example": "a@y.example",
            "ok@example.net": "a@y.example",
        }
        alias = core.get_alias(s, "github.com@example.net")
        assert (alias.origin, alias.site, alias.owner.username) == (
            AliasOrigin.IMPORT, "github.com", "bob"
        )
        assert core.get_alias(s, "ok@example.net").site is None  # "ok" is not a host name
        # One "reload everything" row in the change feed, not one per alias.
        assert list(s.scalars(select(AliasChange.address))) == [None, None, None]  # 2 domains + import


def test_import_never_resurrects_and_update_keeps_state(owners):
    with owners.session() as s:
        bob = core.get_user(s, "bob")
        for local, target in [("burned", "burned"), ("gone", "deleted"), ("off", "disabled"),
                              ("live", "active")]:
            core.set_state(s, core.create_alias(s, f"{local}@example.net", bob), target)
    lines = [f"{local}@example.net new@y.example\n" for local in ("burned", "gone", "off", "live")]
    lines.append("fresh@example.net new@y.example\n")
    with owners.session() as s:
        report = import_virtual(s, lines, owner=core.get_user(s, "alice"))
        assert report.imported == 1 and report.updated == 0
        assert [p.line for p in report.duplicates] == [3, 4]
        assert [p.reason for p in report.errors] == [
            "burned@example.net was burned and is never handed out again",
            "gone@example.net was deleted and is never handed out again",
        ]
        assert core.get_alias(s, "fresh@example.net").owner.username == "alice"
    with owners.session() as s:
        report = import_virtual(s, lines, update_existing=True)
        assert (report.imported, report.updated, len(report.errors)) == (0, 2, 2)
    with owners.session() as s:
        states = {a: (st, d) for a, st, d in s.execute(
            select(Alias.address, Alias.state, Alias.destinations))}
        assert states == {
            "burned@example.net": ("burned", "bob@real.example"),
            "gone@example.net": ("deleted", "bob@real.example"),
            "off@example.net": ("disabled", "new@y.example"),
            "live@example.net": ("active", "new@y.example"),
            "fresh@example.net": ("active", "new@y.example"),
        }


def test_bulk_import_spans_several_batches(owners):
    n = 12_345
    lines = [f"site{i}.example@example.net u{i % 7}@y.example, shared@y.example\n" for i in range(n)]
    with owners.session() as s:
        report = import_virtual(s, lines, site_from_local=True)
        assert report.imported == n and not report.errors
    with owners.session() as s:
        assert s.scalar(select(func.count()).select_from(Alias)) == n
        alias = core.get_alias(s, "site12344.example@example.net")
        assert alias.destinations == f"u{12344 % 7}@y.example,shared@y.example"
        assert alias.site == "site12344.example"


# --- export -------------------------------------------------------------------------
def test_export_round_trip_and_postmap(owners, tmp_path):
    with owners.session() as s:
        bob, alice = core.get_user(s, "bob"), core.get_user(s, "alice")
        core.create_alias(s, "zeta@example.net", bob)
        core.create_alias(s, "Alpha@example.net", alice, destinations=["a@y.example", "b@y.example"])
        core.create_alias(s, "shop@bücher.example", bob)
        core.set_state(s, core.create_alias(s, "off@example.net", bob), "disabled")
        core.set_state(s, core.create_alias(s, "burnt@example.net", bob), "burned")
    with owners.session() as s:
        text = "".join(render_virtual(export_rows(s)))
        full = "".join(render_virtual(export_rows(s, include_all=True)))
        alices = "".join(render_virtual(export_rows(s, owner=core.get_user(s, "alice"))))
        before = _mapping(s)
    assert text == (
        "alpha@example.net\ta@y.example, b@y.example\n"
        "shop@xn--bcher-kva.example\tbob@real.example\n"
        "zeta@example.net\tbob@real.example\n"
    )
    assert "# burned: burnt@example.net\tbob@real.example\n" in full
    assert "# disabled: off@example.net\tbob@real.example\n" in full
    assert alices == "alpha@example.net\ta@y.example, b@y.example\n"

    # Real Postfix reads the export as a virtual table and answers the same lookups.
    path = tmp_path / "virtual"
    path.write_text(full)
    assert postmap(f"hash:{path}").returncode == 0
    for address, dests in before.items():
        got = postmap("-q", address, f"hash:{path}")
        assert got.stdout.strip() == dests.replace(",", ", ")
    assert postmap("-q", "burnt@example.net", f"hash:{path}").returncode == 1

    # Re-import into an empty alias table: the same mapping comes back.
    with owners.session() as s:
        s.execute(delete(Alias))
    with owners.session() as s:
        report = import_virtual(s, full.splitlines(keepends=True))
        assert report.imported == 3 and not report.errors and not report.duplicates
    with owners.session() as s:
        assert _mapping(s) == before


# --- the CLI ------------------------------------------------------------------------
def _cli_setup(aliasd_cli) -> None:
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example")
    aliasd_cli("domain", "add", "example.net", "--owner", "bob")


def test_cli_import_export(aliasd_cli, tmp_path: Path):
    _cli_setup(aliasd_cli)
    src = tmp_path / "virtual"
    src.write_text(
        "\ufeff# imported from the old server (a Windows editor left a byte-order mark)\n"
        "github.com@example.net bob@real.example\n"
        "x@unmanaged.example a@y.example\n"
        "shop@example.net a@y.example,\n"
        "    b@y.example\n"
    )
    dry = aliasd_cli("alias", "import", str(src), "--dry-run", check=False)
    assert dry.returncode == 1
    assert "would import 2" in dry.stdout
    assert aliasd_cli("alias", "export").stdout == ""

    proc = aliasd_cli("alias", "import", str(src), "--site-from-local", check=False)
    assert proc.returncode == 1, proc.stderr  # one line refused, the rest imported
    assert proc.stdout.strip() == "imported 2, updated 0, duplicates 0, errors 1"
    assert proc.stderr.strip() == (
        f"{src}:3: x@unmanaged.example: unmanaged.example is not a domain aliasd manages"
    )
    assert "Traceback" not in proc.stderr

    out = tmp_path / "out" / "exported"
    out.parent.mkdir()
    aliasd_cli("alias", "export", "-o", str(out))
    assert out.read_text() == (
        "github.com@example.net\tbob@real.example\nshop@example.net\ta@y.example, b@y.example\n"
    )
    assert list(out.parent.iterdir()) == [out]  # written atomically, no temp file left

    # Re-import from stdin: all duplicates, exit 0.
    again = aliasd_cli("alias", "import", "-", input=out.read_text())
    assert again.stdout.strip() == "imported 0, updated 0, duplicates 2, errors 0"
    assert again.stderr.startswith("<stdin>:1: github.com@example.net: already exists, skipped")

    listed = aliasd_cli("alias", "list").stdout
    assert "github.com@example.net\tactive\tgithub.com\tbob@real.example" in listed


@pytest.mark.parametrize("engine_name", ["sqlite"])  # argument checks: no engine-specific code
def test_cli_import_unreadable_and_unknown_owner(aliasd_cli, tmp_path: Path):
    _cli_setup(aliasd_cli)
    missing = aliasd_cli("alias", "import", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr and "No such file" in missing.stderr
    src = tmp_path / "v"
    src.write_text("a@example.net x@y.example\n")
    owner = aliasd_cli("alias", "import", str(src), "--owner", "nobody", check=False)
    assert owner.returncode == 1
    assert owner.stderr.strip() == "Error: no user named 'nobody'"
    assert aliasd_cli("alias", "export").stdout == ""  # nothing written


@pytest.mark.parametrize("engine_name", ["postgresql"])
def test_cli_import_database_failure_loses_nothing(aliasd_cli, database, tmp_path: Path):
    """A lock held by another writer past the statement timeout: a clear error, exit 3,
    no partial import; the same command succeeds once the lock is gone."""
    _cli_setup(aliasd_cli)
    src = tmp_path / "v"
    src.write_text("a@example.net x@y.example\nb@example.net x@y.example\n")
    engine = create_engine(database.url)
    try:
        with engine.begin() as conn:
            conn.execute(text("LOCK TABLE aliases IN ACCESS EXCLUSIVE MODE"))
            proc = aliasd_cli("alias", "import", str(src), check=False,
                              env_extra={"ALIASD_DB_TIMEOUT": "1"})
        assert proc.returncode == 3, proc.stderr
        assert "database error, nothing was imported" in proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        engine.dispose()
    assert aliasd_cli("alias", "export").stdout == ""
    ok = aliasd_cli("alias", "import", str(src))
    assert ok.stdout.strip() == "imported 2, updated 0, duplicates 0, errors 0"


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_cli_import_with_the_database_unreachable_exits_3_not_1(aliasd_cli, tmp_path: Path):
    """Exit 1 means "some lines refused, the others imported": a database that cannot be
    opened at all imported nothing, which is exit 3, as for a failure during the import."""
    src = tmp_path / "v"
    src.write_text("a@example.net x@y.example\n")
    url = f"postgresql+psycopg://aliasd@127.0.0.1:{free_port()}/aliasd"
    proc = aliasd_cli("alias", "import", str(src), check=False,
                      env_extra={"ALIASD_DATABASE_URL": url})
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert "nothing was imported" in proc.stderr and "Traceback" not in proc.stderr
    missing = aliasd_cli("alias", "import", str(src), check=False,
                         env_extra={"ALIASD_DATABASE_URL": f"sqlite:///{tmp_path}/none.db"})
    assert missing.returncode == 3, (missing.returncode, missing.stderr)
    assert "run 'aliasd db upgrade' first" in missing.stderr


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_cli_export_to_a_path_it_cannot_write_is_a_clear_error(aliasd_cli, tmp_path: Path):
    _cli_setup(aliasd_cli)
    aliasd_cli("alias", "add", "a@example.net", "--owner", "bob")
    proc = aliasd_cli("alias", "export", "-o", str(tmp_path / "no" / "such" / "dir" / "out"),
                      check=False)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Error: cannot write" in proc.stderr and "No such file or directory" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_export_names_the_aliases_a_virtual_file_cannot_carry_back(aliasd_cli, tmp_path: Path):
    """'#' may begin a local part, but a virtual(5) line starting with it is a comment
    (postmap and import skip it without a word) and import refuses a destination starting
    with it: such aliases are exported as comments saying why, named on stderr, exit 1."""
    _cli_setup(aliasd_cli)
    aliasd_cli("alias", "add", "#news@example.net", "--owner", "bob")
    aliasd_cli("alias", "add", "hash@example.net", "--owner", "bob", "--dest", "#x@y.example")
    aliasd_cli("alias", "add", "shop@example.net", "--owner", "bob")
    out = tmp_path / "exported"
    proc = aliasd_cli("alias", "export", "-o", str(out), check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == [
        "#news@example.net: not exported: a virtual(5) line starting with '#' is a comment",
        "hash@example.net: not exported: destination '#x@y.example' starts with '#', "
        "which alias import refuses",
    ]
    assert out.read_text() == (
        "# not exported: #news@example.net\tbob@real.example\n"
        "# not exported: hash@example.net\t#x@y.example\n"
        "shop@example.net\tbob@real.example\n"
    )


@pytest.mark.postfix
@pytest.mark.parametrize("engine_name", ["postgresql"])
def test_running_lookupd_serves_an_import_at_once(aliasd_cli, settings, tmp_path: Path):
    """The import writes one "reload everything" change; a running lookupd picks it up
    and real Postfix (postmap over socketmap) sees every imported alias."""
    from tests.test_lookup_postfix import Lookupd, lookupd_env, wait_until

    _cli_setup(aliasd_cli)
    n = 2000
    src = tmp_path / "virtual"
    src.write_text("".join(f"site{i}.example@example.net u{i % 9}@y.example\n" for i in range(n))
                   + "bad@unmanaged.example u@y.example\n")
    lookupd = Lookupd(lookupd_env(settings), tmp_path / "lookupd.log")
    try:
        lookupd.wait_loaded("example.net")
        proc = aliasd_cli("alias", "import", str(src), check=False)
        assert proc.returncode == 1 and "imported 2000," in proc.stdout
        keys = [f"Site{i}.example@example.net" for i in range(n)] + ["bad@unmanaged.example"]

        def answers() -> dict[str, str]:
            got = postmap("-q", "-", lookupd.sm, input="".join(k + "\n" for k in keys))
            assert got.stderr == "", got.stderr
            return dict(line.split("\t", 1) for line in got.stdout.splitlines())

        wait_until(lambda: len(answers()) == n, 10, "lookupd serving the import")
        assert answers() == {f"Site{i}.example@example.net": f"u{i % 9}@y.example" for i in range(n)}
    finally:
        lookupd.stop()

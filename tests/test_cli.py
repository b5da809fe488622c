"""The ``aliasd`` command against SQLite and PostgreSQL: outputs, error messages and exit
statuses. Commands run in-process through click's runner; the first test runs the
installed console command as a subprocess, as a smoke test of the entry point."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.harness.net import free_port


def _fails(proc, message: str, code: int = 1) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture
def empty_url(engine_name, tmp_path, request):
    """The URL of a database with no aliasd schema at all, on the same engine."""
    if engine_name == "sqlite":
        yield f"sqlite:///{tmp_path}/fresh/aliasd.db"
        return
    pg = request.getfixturevalue("_postgres")
    name = f"aliasd_empty_{uuid.uuid4().hex[:8]}"
    with pg.admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield pg.url.rsplit("/", 1)[0] + "/" + name
    with pg.admin.connect() as conn:
        conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
        ), {"n": name})
        conn.execute(text(f'DROP DATABASE "{name}"'))


def test_no_schema_asks_for_upgrade_then_upgrade_works(aliasd_cli, empty_url):
    env = {"ALIASD_DATABASE_URL": empty_url}
    refused = aliasd_cli("user", "list", check=False, env_extra=env, subprocess_run=True)
    _fails(refused, "run 'aliasd db upgrade' first")
    if empty_url.startswith("sqlite"):  # the message names the file, and reading made none
        path = empty_url.removeprefix("sqlite:///")
        assert f"the database SQLite file {path} does not exist" in refused.stderr
        assert not os.path.exists(path)
    else:
        assert "has no aliasd schema" in refused.stderr
        assert empty_url.rsplit("/", 1)[1] in refused.stderr
    up = aliasd_cli("db", "upgrade", env_extra=env, subprocess_run=True)
    assert up.stdout.strip().startswith("database at revision ")
    head = up.stdout.split()[-1]
    current = aliasd_cli("db", "current", env_extra=env).stdout
    assert f"database: {head}" in current and f"code:     {head}" in current
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example", env_extra=env)
    assert aliasd_cli("user", "list", env_extra=env).stdout == "bob\tbob@real.example\tlocal\n"


def test_old_schema_asks_for_upgrade(aliasd_cli, database):
    engine = create_engine(database.url)
    try:
        with engine.begin() as conn:
            head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
            conn.execute(text("UPDATE alembic_version SET version_num = '0011_alias_held_count'"))
        refused = aliasd_cli("alias", "list", check=False)
        _fails(refused, "schema is at revision 0011_alias_held_count, this aliasd needs")
        assert "run 'aliasd db upgrade'" in refused.stderr
    finally:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :h"), {"h": head})
        engine.dispose()


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_unreachable_database_is_a_clear_error(aliasd_cli):
    url = f"postgresql+psycopg://aliasd@127.0.0.1:{free_port()}/aliasd"
    _fails(aliasd_cli("alias", "list", check=False, env_extra={"ALIASD_DATABASE_URL": url}),
           "cannot open the database")


# Each subprocess costs ~0.6 s of start-up, so the long scenarios run on one engine each
# (the core they call is tested on both; import/export CLI tests run on both).
@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_users_and_domains(aliasd_cli):
    out = aliasd_cli("user", "add", "bob", "--mailbox", "Bob@Real.Example", "--admin").stdout
    assert out.strip() == "user bob <bob@real.example> (admin) added"
    _fails(aliasd_cli("user", "add", "bob", "--mailbox", "b@real.example", check=False),
           "Error: user 'bob' already exists")
    _fails(aliasd_cli("user", "add", "eve", "--mailbox", "eve at home", check=False),
           "Error: mailbox: ")
    _fails(aliasd_cli("user", "add", "eve", "--mailbox", "e@real.example", "--password-stdin",
                      input="short\n", check=False),
           "at least 8 characters")
    aliasd_cli("user", "add", "alice", "--mailbox", "alice@real.example", "--password-stdin",
               input="correct horse battery\n")
    users = aliasd_cli("user", "list").stdout
    assert users == "alice\talice@real.example\tlocal\nbob\tbob@real.example\tlocal admin\n"

    out = aliasd_cli("domain", "add", "Bücher.Example", "--owner", "bob", "--catch-all", "create",
                     "--catch-all-regex", "[a-z.]+", "--max-per-hour", "5").stdout
    assert out.strip() == "domain xn--bcher-kva.example added (owner bob, catch-all create)"
    _fails(aliasd_cli("domain", "add", "xn--bcher-kva.example", "--owner", "bob", check=False),
           "Error: domain xn--bcher-kva.example is already managed")
    _fails(aliasd_cli("domain", "add", "other.example", "--owner", "nobody", check=False),
           "Error: no user named 'nobody'")
    _fails(aliasd_cli("domain", "add", "other.example", "--owner", "bob",
                      "--catch-all-regex", "(", check=False),
           "catch-all regex '(' is invalid")
    _fails(aliasd_cli("domain", "add", "localhost", "--owner", "bob", check=False),
           "needs at least two labels")
    _fails(aliasd_cli("domain", "add", "o.example", "--owner", "bob", "--catch-all", "maybe",
                      check=False), "Invalid value for '--catch-all'", code=2)
    aliasd_cli("domain", "set", "bücher.example", "--max-per-hour", "-1", "--catch-all-regex", "")
    _fails(aliasd_cli("domain", "set", "bücher.example", check=False), "nothing to change", code=2)
    _fails(aliasd_cli("domain", "set", "nowhere.example", "--catch-all", "reject", check=False),
           "Error: nowhere.example is not a domain aliasd manages")
    assert aliasd_cli("domain", "list").stdout == "xn--bcher-kva.example\tbob\tcreate\t\n"


def test_user_set_follows_the_same_rules_as_the_admin_pages(aliasd_cli):
    aliasd_cli("user", "add", "root", "--mailbox", "root@real.example", "--admin")
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example")
    aliasd_cli("domain", "add", "bob.example", "--owner", "bob")
    aliasd_cli("alias", "add", "shop.com@bob.example", "--owner", "bob")
    out = aliasd_cli("user", "set", "bob", "--mailbox", "Bob@New.Example", "--display-name",
                     "Bob Builder", "--admin").stdout
    assert out == "1 alias(es) now forward to bob@new.example\nuser bob updated\n"
    assert "bob\tbob@new.example\tlocal admin\n" in aliasd_cli("user", "list").stdout
    aliasd_cli("user", "set", "root", "--no-admin")  # bob is an admin now
    _fails(aliasd_cli("user", "set", "bob", "--no-admin", check=False),
           "Error: bob is the last admin")
    _fails(aliasd_cli("user", "set", "bob", "--mailbox", "shop.com@bob.example", check=False),
           "is an alias, not a real mailbox")
    # nor any address of a served domain (no mailbox there; on a catch-all domain the
    # address could never become an alias)
    _fails(aliasd_cli("user", "set", "bob", "--mailbox", "paypal.com@bob.example", check=False),
           "is on bob.example, a domain aliasd serves")
    _fails(aliasd_cli("user", "set", "bob", "--mailbox", "x@mx.bob.example", check=False),
           "is on bob.example, a domain aliasd serves")
    _fails(aliasd_cli("domain", "set", "bob.example", "--max-per-hour", "2000000", check=False),
           "the catch-all cap must be 0 to 1000000")
    _fails(aliasd_cli("user", "set", "bob", check=False), "nothing to change", code=2)


@pytest.mark.parametrize("engine_name", ["postgresql"])
def test_alias_commands(aliasd_cli):
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example")
    aliasd_cli("domain", "add", "example.net", "--owner", "bob")
    out = aliasd_cli("alias", "add", "GitHub.com@Example.NET", "--owner", "bob",
                     "--site", "https://github.com/login").stdout
    assert out.strip() == "github.com@example.net -> bob@real.example"
    aliasd_cli("alias", "add", "shop@example.net", "--owner", "bob", "--dest", "a@y.example",
               "--dest", "b@y.example", "--note", "Shopping")
    for local in ("old", "gone", "spam"):
        aliasd_cli("alias", "add", f"{local}@example.net", "--owner", "bob")

    _fails(aliasd_cli("alias", "add", "github.com@example.net", "--owner", "bob", check=False),
           "Error: github.com@example.net already exists")
    _fails(aliasd_cli("alias", "add", "a b@example.net", "--owner", "bob", check=False),
           "Error: the part before @ must not contain a space")
    _fails(aliasd_cli("alias", "add", "x@elsewhere.example", "--owner", "bob", check=False),
           "Error: elsewhere.example is not a domain aliasd manages")
    _fails(aliasd_cli("alias", "add", "x@example.net", "--owner", "bob", "--dest", "not-an-address",
                      check=False), "Error: destination 'not-an-address'")

    assert aliasd_cli("alias", "disable", "OLD@example.net").stdout.strip() == "old@example.net disabled"
    assert aliasd_cli("alias", "enable", "old@example.net").stdout.strip() == "old@example.net active"
    aliasd_cli("alias", "burn", "spam@example.net")
    _fails(aliasd_cli("alias", "enable", "spam@example.net", check=False),
           "Error: spam@example.net is burned; it cannot become active")
    _fails(aliasd_cli("alias", "add", "spam@example.net", "--owner", "bob", check=False),
           "spam@example.net was burned and is never handed out again")
    aliasd_cli("alias", "delete", "gone@example.net")
    # One unknown address in a batch: an error, and the others are left as they were.
    batch = aliasd_cli("alias", "disable", "old@example.net", "missing@example.net", check=False)
    _fails(batch, "Error: no alias missing@example.net")
    assert batch.stdout == ""

    listed = aliasd_cli("alias", "list").stdout.splitlines()
    assert listed == [
        "github.com@example.net\tactive\tgithub.com\tbob@real.example\t0\t0",
        "old@example.net\tactive\t-\tbob@real.example\t0\t0",
        "shop@example.net\tactive\t-\ta@y.example,b@y.example\t0\t0",
        "spam@example.net\tburned\t-\tbob@real.example\t0\t0",
    ]  # the deleted one is hidden
    assert aliasd_cli("alias", "list", "--state", "deleted").stdout.startswith("gone@example.net\tdeleted")
    assert aliasd_cli("alias", "list", "--search", "shopping").stdout.startswith("shop@example.net")
    assert aliasd_cli("alias", "list", "--search", "_").stdout == ""  # literal, not a wildcard
    _fails(aliasd_cli("alias", "list", "--owner", "nobody", check=False),
           "Error: no user named 'nobody'")

    # forget asks first; "no" changes nothing, --yes releases the address for re-use.
    aborted = aliasd_cli("alias", "forget", "spam@example.net", input="n\n", check=False)
    assert aborted.returncode == 1 and "Aborted" in aborted.stderr
    aliasd_cli("alias", "forget", "spam@example.net", "--yes")
    aliasd_cli("alias", "add", "spam@example.net", "--owner", "bob")
    assert "spam@example.net\tactive" in aliasd_cli("alias", "list").stdout


def test_help_lists_commands_without_any_configuration(tmp_path):
    """`aliasd --help` works on a machine with no settings (production env, default
    secret): listing commands must not build the web app."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "aliasd", "--help"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for command in ("alias", "domain", "lookupd", "milter", "postfix-config", "blocklist", "up"):
        assert f"  {command} " in proc.stdout


def test_a_shell_without_data_dir_names_the_database_it_looked_at_and_creates_none(tmp_path):
    """No ALIASD_DATA_DIR: the default data directory is used (/var/lib/aliasd for root);
    a read names the file it looked for instead of silently creating an empty one."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIASD_")}
    env.update(XDG_DATA_HOME=str(tmp_path / "xdg"), HOME=str(tmp_path))  # the non-root default
    expected = (Path("/var/lib/aliasd") if os.geteuid() == 0
                else tmp_path / "xdg" / "aliasd") / "aliasd.db"
    if expected.exists():
        pytest.skip(f"{expected} exists on this machine (a real install); not touching it")
    parent_existed = expected.parent.exists()
    proc = subprocess.run([sys.executable, "-m", "aliasd", "alias", "list"], env=env,
                          capture_output=True, text=True, timeout=60)
    _fails(proc, f"the database SQLite file {expected} does not exist")
    assert "ALIASD_DATA_DIR" in proc.stderr
    assert not expected.exists()
    assert expected.parent.exists() == parent_existed


@contextlib.contextmanager
def _aliases_locked(database):
    """Another writer holds the aliases table (SQLite: the whole file) until the block ends."""
    if database.is_sqlite:
        conn = sqlite3.connect(str(database.sqlite_path), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    engine = create_engine(database.url)
    try:
        with engine.begin() as conn:
            conn.execute(text("LOCK TABLE aliases IN ACCESS EXCLUSIVE MODE"))
            yield
    finally:
        engine.dispose()


def test_a_locked_database_is_a_clear_error_and_changes_nothing(aliasd_cli, database):
    """Another writer holds the lock past db_timeout: the command says the database failed,
    in one line without SQL or a traceback, exits 1, and leaves nothing half-done."""
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example")
    aliasd_cli("domain", "add", "example.net", "--owner", "bob")
    aliasd_cli("alias", "add", "old@example.net", "--owner", "bob")
    quick = {"ALIASD_DB_TIMEOUT": "0.3"}
    with _aliases_locked(database):
        for args in (("alias", "add", "new@example.net", "--owner", "bob"),
                     ("alias", "disable", "old@example.net")):
            proc = aliasd_cli(*args, check=False, env_extra=quick)
            _fails(proc, "Error: database error")
            assert "[SQL:" not in proc.stderr and "[parameters:" not in proc.stderr
    assert aliasd_cli("alias", "list").stdout == "old@example.net\tactive\t-\tbob@real.example\t0\t0\n"


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_db_current_with_the_database_unreachable_is_a_clear_error(aliasd_cli):
    url = f"postgresql+psycopg://aliasd@127.0.0.1:{free_port()}/aliasd"
    _fails(aliasd_cli("db", "current", check=False, env_extra={"ALIASD_DATABASE_URL": url}),
           "Error: database error (postgresql+psycopg://aliasd@127.0.0.1:")


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_the_sqlite_file_db_upgrade_creates_is_readable_by_its_owner_only(aliasd_cli, tmp_path):
    """It holds password hashes, sessions and recent mail kept for learning; the data
    directory is 0751 so that Postfix reaches header_checks by name, and a umask of 022
    would leave aliasd.db readable by every local user who knows that name."""
    path = tmp_path / "fresh" / "aliasd.db"
    env = {"ALIASD_DATABASE_URL": f"sqlite:///{path}"}
    old = os.umask(0o022)
    try:
        aliasd_cli("db", "upgrade", env_extra=env)
        aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example", "--password-stdin",
                   input="correct horse battery\n", env_extra=env)
        files = [p for p in path.parent.iterdir() if p.name.startswith("aliasd.db")]
        assert path in files
        for file in files:  # the -wal and -shm files SQLite makes take the file's mode
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        os.umask(old)


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_db_upgrade_makes_an_existing_world_readable_sqlite_file_owner_only(aliasd_cli, tmp_path):
    """Installs from before the file was made 0600 keep their data after the upgrade,
    readable by the owner only."""
    path = tmp_path / "old" / "aliasd.db"
    env = {"ALIASD_DATABASE_URL": f"sqlite:///{path}"}
    aliasd_cli("db", "upgrade", env_extra=env)
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example", env_extra=env)
    os.chmod(path, 0o644)
    upgraded = aliasd_cli("db", "upgrade", env_extra=env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "readable by its owner only (it was 644)" in upgraded.stdout + upgraded.stderr
    assert "bob" in aliasd_cli("user", "list", env_extra=env).stdout


@pytest.mark.parametrize("engine_name", ["sqlite"])
@pytest.mark.parametrize("command", [("blocklist", "disable"), ("blocklist", "enable"),
                                     ("quarantine", "release"), ("quarantine", "delete")])
def test_an_id_too_large_for_the_database_is_a_usage_error(aliasd_cli, command):
    _fails(aliasd_cli(*command, str(2**64), check=False), "Invalid value", code=2)


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_milter_on_an_address_in_use_says_it_cannot_listen(aliasd_cli):
    """As lookupd does: one line naming the address, not a traceback."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        proc = aliasd_cli("milter", "--listen", f"127.0.0.1:{port}", "--workers", "1",
                          check=False, subprocess_run=True)
        _fails(proc, f"Error: cannot listen on 127.0.0.1:{port}: Address already in use")
    finally:
        taken.close()


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_a_password_on_stdin_that_is_not_utf8_is_refused_with_a_reason(aliasd_cli, settings):
    """A password typed in a Latin-1 terminal (or a binary file piped by mistake) is
    refused as the other bad passwords are, not with a UnicodeEncodeError traceback."""
    import subprocess
    import sys

    from tests.harness.cli import settings_env

    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example")
    env = settings_env(settings) | {"LC_ALL": "C.UTF-8"}
    for args in (("user", "passwd", "bob", "--password-stdin"),
                 ("user", "add", "eve", "--mailbox", "eve@real.example", "--password-stdin")):
        proc = subprocess.run([sys.executable, "-m", "aliasd", *args],
                              input="caf\u00e9 au lait\n".encode("latin-1"), env=env,
                              capture_output=True, timeout=120)
        stderr = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 1, stderr
        assert "Error: the password must be UTF-8 text" in stderr and "Traceback" not in stderr
    assert aliasd_cli("user", "list").stdout == "bob\tbob@real.example\tlocal\n"


@pytest.mark.parametrize("engine_name", ["sqlite"])
@pytest.mark.parametrize("args", [
    ("alias", "add", "ab@example.net", "--owner", "bob\udcff"),
    ("alias", "add", "ab@example.net", "--owner", "bob", "--note", "caf\udce9"),
    ("alias", "list", "--search", "caf\udce9"),
    ("user", "set", "bob", "--display-name", "Caf\udce9"),
    ("domain", "set", "example.net", "--catch-all-regex", "caf\udce9"),
    ("blocklist", "add", "--regex", "/caf\udce9/"),
])
def test_an_argument_that_is_not_utf8_is_refused_with_a_reason(aliasd_cli, args):
    """Python hands bytes of argv that are not UTF-8 (a Latin-1 terminal) on as lone
    surrogates; stored or searched for, they failed with a UnicodeEncodeError traceback."""
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example")
    aliasd_cli("domain", "add", "example.net", "--owner", "bob")
    _fails(aliasd_cli(*args, check=False), "is not UTF-8 text")
    assert aliasd_cli("alias", "list").stdout == ""

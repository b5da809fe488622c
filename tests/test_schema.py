"""Alembic migrations build the schema on both engines, and code refuses a stale schema
with a message that says what to do."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from aliasd.db import Database, SchemaOutdated
from aliasd.models import Base


def test_migrations_create_every_model_table(database):
    tables = set(inspect(database.engine).get_table_names())
    assert {t.name for t in Base.metadata.sorted_tables} <= tables
    database.require_current_schema()


def test_migrations_match_the_models(database):
    """A model change without a migration fails here (alembic autogenerate finds no diff)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with database.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # Type affinity differences SQLite reports for variants are not schema drift.
    meaningful = [d for d in diff if not (isinstance(d, list) and d and d[0][0] == "modify_type")]
    assert meaningful == []


def test_empty_database_asks_for_upgrade(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/empty.db")
    with pytest.raises(SchemaOutdated, match="run 'aliasd db upgrade'"):
        db.require_current_schema()


def test_other_schema_revision_asks_for_upgrade(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/old.db")
    db.upgrade()
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0011_alias_held_count'"))
    with pytest.raises(SchemaOutdated,
                       match="at revision 0011_alias_held_count.*run 'aliasd db upgrade'"):
        db.require_current_schema()


def test_counting_held_messages_reads_only_the_held_ones(tmp_path):
    """The quarantine cap is checked for every held message; released and deleted rows
    pile up for ever, so the count goes through the state index, not the whole table."""
    from aliasd.core import quarantine

    db = Database(f"sqlite:///{tmp_path}/q.db")
    db.upgrade()
    with db.session() as s:
        captured = []
        conn = s.connection()
        from sqlalchemy import event

        event.listen(conn, "before_cursor_execute",
                     lambda _c, _cur, statement, params, *_: captured.append((statement, params)))
        assert quarantine.held_count(s) == 0
        statement, params = captured[-1]
        plan = " ".join(str(row) for row in conn.exec_driver_sql(
            f"EXPLAIN QUERY PLAN {statement}", params))
    assert "ix_quarantined_state" in plan, plan
    db.dispose()


def _sqlite_tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names())


def test_a_failed_sqlite_upgrade_changes_nothing_and_can_be_run_again(tmp_path):
    """On PostgreSQL a migration that fails rolls back whole; on SQLite too: an upgrade
    stopped half-way (a stray table, a row a new constraint refuses, Ctrl-C) must not
    leave some of its columns and tables behind at the old revision, where every later
    upgrade fails on 'duplicate column'."""
    db = Database(f"sqlite:///{tmp_path}/aliasd.db")
    try:
        db.upgrade("0009_reverse_aliases")
        before = _sqlite_tables(db)
        user_columns = {c["name"] for c in inspect(db.engine).get_columns("users")}
        with db.engine.begin() as conn:  # 0010 creates this table after several steps
            conn.execute(text("CREATE TABLE user_bayes_tokens (x INTEGER)"))
        with pytest.raises(Exception, match="user_bayes_tokens already exists"):
            db.upgrade()
        db.engine.dispose()
        assert db.current_revision() == "0009_reverse_aliases"
        assert _sqlite_tables(db) == before | {"user_bayes_tokens"}
        assert {c["name"] for c in inspect(db.engine).get_columns("users")} == user_columns
        with db.engine.begin() as conn:
            conn.execute(text("DROP TABLE user_bayes_tokens"))
        db.upgrade()
        assert db.current_revision() == db.head_revision()
    finally:
        db.dispose()


def test_two_upgrades_at_once_both_succeed(engine_name, tmp_path, request):
    """Two hosts (or a unit and an admin's shell) running 'aliasd db upgrade' at the same
    time on a fresh database: the second waits for the first, then finds nothing to do."""
    import subprocess
    import sys

    if engine_name == "sqlite":
        url = f"sqlite:///{tmp_path}/aliasd.db"
    else:
        from tests.harness.databases import PG_ADMIN_URL

        pg = request.getfixturevalue("_postgres")
        name = f"aliasd_twice_{tmp_path.name[-8:]}".lower().replace("-", "_")
        with pg.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        request.addfinalizer(lambda: _drop(pg, name))
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    env = {"PATH": "/usr/bin:/bin", "ALIASD_DATA_DIR": str(tmp_path / "data"),
           "ALIASD_DATABASE_URL": url, "ALIASD_DB_TIMEOUT": "60"}
    for attempt in range(2):
        procs = [subprocess.Popen([sys.executable, "-m", "aliasd", "db", "upgrade"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            assert proc.returncode == 0, (attempt, err)
            assert out.startswith("database at revision "), out


def _drop(pg, name: str) -> None:
    with pg.admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = :n"), {"n": name})
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


def test_a_schema_from_a_newer_aliasd_says_so_instead_of_asking_for_an_upgrade(tmp_path):
    """One host runs an older aliasd than the one that upgraded the shared database (or a
    package was rolled back): 'run aliasd db upgrade' was the advice, and that upgrade then
    failed with "Can't locate revision"."""
    db = Database(f"sqlite:///{tmp_path}/aliasd.db")
    try:
        db.upgrade()
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
        for attempt in (db.require_current_schema, db.upgrade):
            with pytest.raises(SchemaOutdated) as refused:
                attempt()
            message = str(refused.value)
            assert "0099_from_the_future" in message and "newer aliasd" in message
            assert "run 'aliasd db upgrade'" not in message
    finally:
        db.dispose()

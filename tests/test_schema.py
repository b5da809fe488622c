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
        conn.execute(text("UPDATE alembic_version SET version_num = '0000_older'"))
    with pytest.raises(SchemaOutdated, match="at revision 0000_older.*run 'aliasd db upgrade'"):
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

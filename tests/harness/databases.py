"""Fresh databases at schema head: a SQLite file per test, or one PostgreSQL database
per test session truncated between tests."""

from __future__ import annotations

import os
import uuid

from sqlalchemy import create_engine, text

from aliasd.db import Database
from aliasd.models import Base

PG_ADMIN_URL = os.environ.get(
    "ALIASD_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


class PostgresTestDatabase:
    """One throw-away PostgreSQL database for a pytest session."""

    def __init__(self) -> None:
        self.name = f"aliasd_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.name
        Database(self.url).upgrade()

    def clean(self) -> None:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        engine = create_engine(self.url)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        engine.dispose()

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": self.name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}"'))
        self.admin.dispose()


def sqlite_database(path: str) -> Database:
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    return db


def open_clean_database(engine_name: str, directory, request) -> Database:
    """A database at schema head with no rows: a new SQLite file in ``directory``, or the
    session's PostgreSQL database emptied. Module-scoped fixtures call it directly."""
    if engine_name == "sqlite":
        return sqlite_database(str(directory / "aliasd.db"))
    pg = request.getfixturevalue("_postgres")
    _flush_scanner_counters_now()
    pg.clean()
    return Database(pg.url)


def _flush_scanner_counters_now() -> None:
    """A bundled scanner writes its scan counters up to 2 s after its last scan, from a
    timer: one an earlier test left behind would write them into the next test's
    database, which is the same PostgreSQL database emptied. Write them before emptying."""
    import threading

    from aliasd.scanner.bundled import BundledScanner

    for thread in threading.enumerate():
        owner = getattr(getattr(thread, "function", None), "__self__", None)
        if isinstance(thread, threading.Timer) and isinstance(owner, BundledScanner):
            owner.close()

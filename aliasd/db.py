"""Engine, sessions and schema version checks. No Flask here: every process
(web, lookupd, milter, CLI) reaches the database through this module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from aliasd.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# Session.info keys: the settings of the process that opened the session, and its
# Database (what the header_checks publisher needs after a commit).
SESSION_SETTINGS = "aliasd.settings"
SESSION_DATABASE = "aliasd.database"


class SchemaOutdated(RuntimeError):
    """The database schema is older (or newer) than this code expects."""


class Database:
    """One engine and a session factory for one database URL."""

    def __init__(self, url: str, *, timeout: float = 5.0, echo: bool = False) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        connect_args: dict = {}
        kwargs: dict = {"echo": echo, "future": True}
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            connect_args = {"timeout": timeout, "check_same_thread": False}
        else:
            ms = int(timeout * 1000)
            connect_args = {
                "connect_timeout": max(1, int(timeout)),
                "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
                # A network partition mid-query must fail in seconds, not after the
                # kernel's two-hour keepalive: lookupd's sync thread would stall meanwhile.
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                "tcp_user_timeout": max(1000, ms * 2),
            }
            kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=10)
        self.engine: Engine = create_engine(url, connect_args=connect_args, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on any error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()

    def bind_settings(self, settings: Settings) -> None:
        """Sessions opened from now on carry ``settings`` in ``Session.info``."""
        self.sessionmaker.configure(info={SESSION_SETTINGS: settings, SESSION_DATABASE: self})

    # --- schema -----------------------------------------------------------------
    def alembic_config(self):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        cfg.attributes["engine"] = self.engine
        return cfg

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def upgrade(self, revision: str = "head") -> None:
        from alembic import command

        command.upgrade(self.alembic_config(), revision)

    def require_current_schema(self) -> None:
        """Raise SchemaOutdated with a clear message unless the schema is at head."""
        current = self.current_revision()
        head = self.head_revision()
        if current == head:
            return
        if current is None:
            has_tables = bool(inspect(self.engine).get_table_names())
            what = "has no aliasd schema" if not has_tables else "is not managed by aliasd"
            raise SchemaOutdated(
                f"the database {what}; run 'aliasd db upgrade' first"
            )
        raise SchemaOutdated(
            f"the database schema is at revision {current}, this aliasd needs {head}; "
            "run 'aliasd db upgrade'"
        )


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


_databases: dict[str, Database] = {}


def get_database(settings: Settings) -> Database:
    """The process-wide Database for these settings (one engine per URL)."""
    url = settings.effective_database_url
    db = _databases.get(url)
    if db is None:
        db = Database(url, timeout=settings.db_timeout)
        _databases[url] = db
    db.bind_settings(settings)  # the latest caller's settings (one per process in service)
    return db

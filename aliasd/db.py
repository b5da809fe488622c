"""Engine, sessions and schema version checks. No Flask here: every process
(web, lookupd, milter, CLI) reaches the database through this module."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from aliasd.config import Settings
from aliasd.resources import migrations_dir

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
        # The SQLite file, or None (another engine, or in memory). Only an upgrade creates
        # it: a read must not leave an empty file behind under a mistaken data_dir.
        self.sqlite_path: Path | None = None
        if self.is_sqlite and parsed.database and parsed.database != ":memory:" \
                and not parsed.database.startswith("file:"):
            self.sqlite_path = Path(parsed.database).absolute()
        self.description = (
            f"SQLite file {self.sqlite_path}" if self.sqlite_path
            else parsed.render_as_string(hide_password=True)
        )
        connect_args: dict = {}
        kwargs: dict = {"echo": echo, "future": True}
        if self.is_sqlite:
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

    @contextlib.contextmanager
    def reading(self) -> Iterator[Connection]:
        """A connection for reads that need no transaction around them (each statement
        sees what is committed when it runs): no BEGIN and no COMMIT or ROLLBACK, whose
        round trips cost PostgreSQL more than a small query. Not for writes."""
        with self.engine.connect() as connection:
            # SQLite's driver begins no transaction for a read anyway, and switching it
            # to autocommit and back costs a PRAGMA each time.
            yield connection if self.is_sqlite else \
                connection.execution_options(isolation_level="AUTOCOMMIT")

    def dispose(self) -> None:
        self.engine.dispose()

    def bind_settings(self, settings: Settings) -> None:
        """Sessions opened from now on carry ``settings`` in ``Session.info``."""
        self.sessionmaker.configure(info={SESSION_SETTINGS: settings, SESSION_DATABASE: self})

    # --- schema -----------------------------------------------------------------
    def alembic_config(self):
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_dir()))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        cfg.attributes["engine"] = self.engine
        return cfg

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    def _refuse_unknown_revision(self, current: str | None) -> None:
        """A revision this code has no migration for was written by a newer aliasd: no
        upgrade can help, and alembic would only say it "can't locate" it."""
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        if current is None:
            return
        try:
            ScriptDirectory.from_config(self.alembic_config()).get_revision(current)
        except CommandError:
            raise SchemaOutdated(
                f"the database {self.description}: schema is at revision {current}, this "
                f"aliasd needs {self.head_revision()} and has no migration from {current}: "
                "most likely a newer aliasd upgraded it; run that version (or a later one) "
                "here, an upgrade cannot take a schema back"
            ) from None

    def exists(self) -> bool:
        """False only for a SQLite file that is not there (nothing to read yet)."""
        return self.sqlite_path is None or self.sqlite_path.exists()

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        if not self.exists():
            return None
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def upgrade(self, revision: str = "head") -> list[str]:
        """Apply the migrations; returns notes for the admin (files whose mode changed)."""
        from alembic import command

        notes: list[str] = []

        if self.sqlite_path is not None:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            # Password hashes, sessions, kept mail: the owner's only, whatever the umask
            # (SQLite gives its -wal and -shm files the same mode).
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.sqlite_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            notes += self._owner_only(self.sqlite_path)
        self._refuse_unknown_revision(self.current_revision())
        command.upgrade(self.alembic_config(), revision)
        return notes

    @staticmethod
    def _owner_only(path: Path) -> list[str]:
        """A file made before aliasd made it 0600 (or copied in) may be readable by every
        local user: tighten it and its -wal/-shm when they are ours to change."""
        notes = []
        for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                st = file.stat()
            except FileNotFoundError:
                continue
            if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                os.chmod(file, 0o600)
                notes.append(f"made {file} readable by its owner only (it was {st.st_mode & 0o777:o})")
        return notes

    def require_current_schema(self) -> None:
        """Raise SchemaOutdated with a clear message, naming the database, unless the
        schema is at head."""
        if not self.exists():
            raise SchemaOutdated(
                f"the database {self.description} does not exist; run 'aliasd db upgrade' "
                "first, or point ALIASD_DATA_DIR / ALIASD_DATABASE_URL at the one you meant"
            )
        current = self.current_revision()
        head = self.head_revision()
        if current == head:
            return
        self._refuse_unknown_revision(current)
        if current is None:
            has_tables = bool(inspect(self.engine).get_table_names())
            what = "has no aliasd schema" if not has_tables else "is not managed by aliasd"
            raise SchemaOutdated(
                f"the database {self.description} {what}; run 'aliasd db upgrade' first"
            )
        raise SchemaOutdated(
            f"the database {self.description}: schema is at revision {current}, this aliasd "
            f"needs {head}; run 'aliasd db upgrade'"
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

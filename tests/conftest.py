"""Shared fixtures. Tests that touch the database run once on SQLite and once on
PostgreSQL (127.0.0.1:5432) through the ``database`` fixture."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from aliasd.config import Settings, load_settings
from aliasd.db import Database
from tests.harness.databases import PostgresTestDatabase, sqlite_database

ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def _postgres() -> Iterator[PostgresTestDatabase]:
    pg = PostgresTestDatabase()
    yield pg
    pg.drop()


@pytest.fixture(params=ENGINES)
def engine_name(request) -> str:
    return request.param


def open_clean_database(engine_name: str, directory, request) -> Database:
    """A database at schema head with no rows: a new SQLite file in ``directory``, or the
    session's PostgreSQL database emptied. Module-scoped fixtures call it directly."""
    if engine_name == "sqlite":
        return sqlite_database(str(directory / "aliasd.db"))
    pg = request.getfixturevalue("_postgres")
    pg.clean()
    return Database(pg.url)


@pytest.fixture
def database(engine_name, tmp_path, request) -> Iterator[Database]:
    """A database at schema head with no rows, on the engine of ``engine_name``."""
    db = open_clean_database(engine_name, tmp_path, request)
    yield db
    db.dispose()


@pytest.fixture
def settings(database, tmp_path) -> Settings:
    """Settings pointing at the test database and a private data directory."""
    return load_settings(
        environ={},
        data_dir=str(tmp_path / "data"),
        database_url=database.url,
        env="development",
        secret_key="test-secret",
        # Tests never reload the machine's own Postfix; those that drive a private
        # instance set "postfix -c DIR reload" themselves.
        blocklist_reload_command="",
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment for an ``aliasd`` subprocess using these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIASD_")}
    env["ALIASD_DATA_DIR"] = settings.data_dir
    env["ALIASD_DATABASE_URL"] = settings.effective_database_url
    env["ALIASD_ENV"] = settings.env
    env["ALIASD_SECRET_KEY"] = settings.secret_key
    env["ALIASD_BLOCKLIST_FILE"] = settings.effective_blocklist_file
    env["ALIASD_BLOCKLIST_RELOAD_COMMAND"] = settings.blocklist_reload_command
    return env


def run_cli_in_process(
    env: dict[str, str], args: tuple[str, ...], input: str | None = None
) -> subprocess.CompletedProcess:
    """``aliasd ARGS`` in this process through click's runner, with the settings that
    ``env`` gives; the result looks like the subprocess's (returncode, stdout, stderr)."""
    from click.testing import CliRunner

    from aliasd import db as db_module
    from aliasd.cli import main
    from aliasd.cli.common import CliState

    runner = CliRunner()
    try:
        result = runner.invoke(
            main, list(args), input=input, obj=CliState(load_settings(environ=env)),
            env={k: v for k, v in env.items() if k.startswith("ALIASD_")},
        )  # fmt: skip
    finally:
        # One engine per URL is kept process-wide; a test's database goes with the test.
        for database in db_module._databases.values():
            database.dispose()
        db_module._databases.clear()
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(
        ["aliasd", *args], result.exit_code, result.stdout, stderr
    )


@pytest.fixture
def aliasd_cli(settings):
    """Run an ``aliasd`` command against the test database, in-process (fast enough to
    run every scenario on both engines). ``subprocess=True`` runs the real console
    command instead, for the few smoke tests of the installed entry point."""

    def run(*args: str, input: str | None = None, check: bool = True, env_extra=None,
            subprocess_run: bool = False):
        env = settings_env(settings)
        env.update(env_extra or {})
        if subprocess_run:
            proc = subprocess.run(
                [sys.executable, "-m", "aliasd", *args],
                input=input,
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )
        else:
            proc = run_cli_in_process(env, args, input)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"aliasd {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run

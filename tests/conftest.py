"""Shared fixtures. Tests that touch the database run once on SQLite and once on
PostgreSQL (127.0.0.1:5432) through the ``database`` fixture."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from aliasd.config import Settings, load_settings
from aliasd.db import Database
from tests.harness.cli import run_cli_in_process, settings_env
from tests.harness.databases import PostgresTestDatabase, open_clean_database
from tests.harness.dns import DnsServer

ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def _postgres() -> Iterator[PostgresTestDatabase]:
    pg = PostgresTestDatabase()
    yield pg
    pg.drop()


@pytest.fixture(params=ENGINES)
def engine_name(request) -> str:
    return request.param


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


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    """The tests' own authoritative DNS server on 127.0.0.1 (UDP and TCP); add records
    with ``dns_server.add(name, "TXT", value)``."""
    server = DnsServer().start()
    yield server
    server.stop()


@pytest.fixture
def dns_settings(settings, dns_server) -> Settings:
    """``settings`` whose DNS lookups all go to ``dns_server``."""
    return settings.with_overrides(dns_resolver=dns_server.address)


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

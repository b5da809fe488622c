"""Running aliasd's command line from tests: the environment a subprocess needs for
given settings, and the same command run in-process through click's runner."""

from __future__ import annotations

import os
import subprocess

from aliasd.config import Settings, load_settings


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment for an ``aliasd`` subprocess using these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIASD_")}
    env["ALIASD_DATA_DIR"] = settings.data_dir
    env["ALIASD_DATABASE_URL"] = settings.effective_database_url
    env["ALIASD_ENV"] = settings.env
    env["ALIASD_SECRET_KEY"] = settings.secret_key
    env["ALIASD_BLOCKLIST_FILE"] = settings.effective_blocklist_file
    env["ALIASD_BLOCKLIST_RELOAD_COMMAND"] = settings.blocklist_reload_command
    # aliasd's DNS goes to the tests' own server (tests/harness/dns.py) when one is set
    env["ALIASD_DNS_RESOLVER"] = settings.dns_resolver
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

"""aliasd up: web (gunicorn aliasd.web.wsgi:app), lookupd and the milter together, for a quick
start on the embedded default. Prints the URL and the Postfix lines, forwards signals,
stops everything on Ctrl-C, and stops everything (exit 1) if one part dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import click

from aliasd.cli.common import echo_err, state
from aliasd.config import SettingsError

STOP_GRACE = 10.0


def _children_commands(ctx: click.Context, listen: str, workers: int, lookupd: bool,
                       milter: bool) -> dict[str, list[str]]:
    py = sys.executable
    commands = {
        "web": [py, "-m", "gunicorn", "--bind", listen,
                "--workers", str(workers), "--access-logfile", "-", "--forwarded-allow-ips",
                "127.0.0.1", "aliasd.web.wsgi:app"],
    }
    group = ctx.find_root().command
    assert isinstance(group, click.Group)
    if lookupd and group.get_command(ctx, "lookupd") is not None:
        commands["lookupd"] = [py, "-m", "aliasd", "lookupd"]
    if milter and group.get_command(ctx, "milter") is not None:
        commands["milter"] = [py, "-m", "aliasd", "milter"]
    return commands


def _postfix_lines(ctx: click.Context) -> str:
    group = ctx.find_root().command
    if not isinstance(group, click.Group) or group.get_command(ctx, "postfix-config") is None:
        return ""
    proc = subprocess.run([sys.executable, "-m", "aliasd", "postfix-config"],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout if proc.returncode == 0 else f"(postfix-config failed: {proc.stderr})"


def _ensure_header_checks(settings, database) -> None:
    """Postfix's cleanup cannot open a header_checks table that does not exist (mail
    would be deferred), so write the blocklist once before Postfix is pointed at it."""
    from aliasd.postfix.publisher import HeaderChecksError, publish

    try:
        result = publish(settings, database)
    except HeaderChecksError as exc:
        echo_err(f"aliasd up: blocklist not written: {exc}")
        return
    echo_err(f"aliasd up: blocklist table {settings.effective_blocklist_file} ({result.rules} rules)")
    for refused in result.refused:
        echo_err(f"aliasd up: {refused.reason}")
    if result.reload_error:
        echo_err(f"aliasd up: {result.reload_error}")


@click.command("up")
@click.option("--listen", help="HOST:PORT for the web app (default: the web_listen setting).")
@click.option("--workers", default=2, show_default=True, help="gunicorn worker processes.")
@click.option("--no-lookupd", is_flag=True, help="Do not start the lookup server.")
@click.option("--no-milter", is_flag=True, help="Do not start the milter.")
@click.pass_context
def up(ctx: click.Context, listen: str | None, workers: int, no_lookupd: bool,
       no_milter: bool) -> None:
    """Run web, lookupd and milter together until Ctrl-C."""
    from aliasd.web import check_secret

    cli = state()
    settings = cli.settings
    try:
        check_secret(settings)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    database = cli.database()  # a clear "run 'aliasd db upgrade'" before anything starts
    _ensure_header_checks(settings, database)
    listen = listen or settings.web_listen
    commands = _children_commands(ctx, listen, workers, not no_lookupd, not no_milter)

    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        if signum in (signal.SIGINT, signal.SIGTERM):
            stopping = True
        for child in children.values():
            if child.poll() is None:
                # Ctrl-C becomes a graceful SIGTERM for every child; SIGHUP passes as is
                # (gunicorn reloads its workers on it).
                child.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)

    env = dict(os.environ)
    try:
        for name, command in commands.items():
            # Own session: the terminal's Ctrl-C reaches only us, and we stop children in order.
            children[name] = subprocess.Popen(command, env=env, start_new_session=True)
            echo_err(f"aliasd up: started {name} (pid {children[name].pid})")
        host, _, port = listen.rpartition(":")
        click.echo(f"aliasd web app: http://{host or '127.0.0.1'}:{port}/")
        lines = _postfix_lines(ctx)
        if lines:
            click.echo("Postfix main.cf lines (postconf -e, then postfix reload):")
            click.echo(lines.rstrip("\n"))
        sys.stdout.flush()
        failed = None
        while not stopping:
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    failed = (name, code)
                    break
            if failed:
                break
            time.sleep(0.2)
    finally:
        _stop_all(children)
    if failed:
        name, code = failed
        raise click.ClickException(
            f"{name} exited with status {code}; stopped the others (see its messages above)"
        )
    echo_err("aliasd up: stopped")


def _stop_all(children: dict[str, subprocess.Popen]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_GRACE
    for name, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            echo_err(f"aliasd up: {name} did not stop in {STOP_GRACE:.0f}s; killing it")
            child.kill()
            child.wait()


def register(group: click.Group) -> None:
    group.add_command(up)

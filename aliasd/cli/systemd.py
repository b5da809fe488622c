"""aliasd systemd: the systemd units (web, lookupd, milter, Postfix reload on a new
blocklist, quarantine requests and purge), the system user and the socket directory, for
this installation and its settings."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import click

from aliasd.cli.common import echo_err, state
from aliasd.systemd_units import ENABLE_UNITS, hidden_from_services, rendered_files


@click.command("systemd")
@click.option("--bin-dir", default=lambda: sysconfig.get_path("scripts"),
              show_default="this installation's bin directory",
              help="Where the aliasd and gunicorn commands are.")
@click.option("--write", "root", type=click.Path(file_okay=False),
              help="Write the files under this root ('/' installs them) instead of printing.")
def systemd(bin_dir: str, root: str | None) -> None:
    """Print (or write) systemd units, sysusers and tmpfiles entries for aliasd. They
    follow the settings this command sees (data_dir, blocklist_file, web_listen): run it
    with the ALIASD_* variables the units' EnvironmentFile gives the services."""
    settings = state().settings
    try:
        files = rendered_files(settings, bin_dir)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if hidden_from_services(settings.data_dir):
        echo_err(f"warning: data_dir {settings.data_dir} is hidden from the services "
                 "(ProtectHome=yes); set ALIASD_DATA_DIR, e.g. from /etc/aliasd/aliasd.env")
    if root is None:
        for target, content in files.items():
            click.echo(f"# ==> {target} <==")
            click.echo(content)
        click.echo("# then: systemd-sysusers; systemd-tmpfiles --create; systemctl daemon-reload;\n"
                   f"# systemctl enable --now {' '.join(ENABLE_UNITS)}")
        return
    for target, content in files.items():
        path = Path(root) / target.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        click.echo(f"wrote {path}")


def register(group: click.Group) -> None:
    group.add_command(systemd)

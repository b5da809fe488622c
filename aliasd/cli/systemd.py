"""aliasd systemd: the systemd units (web, lookupd, milter, Postfix reload on a new
blocklist, quarantine requests and purge), the system user and the socket directory, for
this installation."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import click

from aliasd.resources import PACKAGE_DIR

UNITS_DIR = PACKAGE_DIR / "systemd"
SHIPPED_BIN_DIR = "/opt/aliasd/venv/bin"  # the path the shipped files name

# shipped file → where it is installed
INSTALL_PATHS = {
    "aliasd.sysusers.conf": "/etc/sysusers.d/aliasd.conf",
    "aliasd.tmpfiles.conf": "/etc/tmpfiles.d/aliasd.conf",
    "aliasd-web.service": "/etc/systemd/system/aliasd-web.service",
    "aliasd-lookupd.service": "/etc/systemd/system/aliasd-lookupd.service",
    "aliasd-milter.service": "/etc/systemd/system/aliasd-milter.service",
    "aliasd-postfix-reload.service": "/etc/systemd/system/aliasd-postfix-reload.service",
    "aliasd-postfix-reload.path": "/etc/systemd/system/aliasd-postfix-reload.path",
    "aliasd-quarantine.path": "/etc/systemd/system/aliasd-quarantine.path",
    "aliasd-quarantine.service": "/etc/systemd/system/aliasd-quarantine.service",
    "aliasd-quarantine-purge.service": "/etc/systemd/system/aliasd-quarantine-purge.service",
    "aliasd-quarantine-purge.timer": "/etc/systemd/system/aliasd-quarantine-purge.timer",
}


def rendered_files(bin_dir: str) -> dict[str, str]:
    """Install path → content, with the shipped bin directory replaced by ``bin_dir``."""
    return {
        target: (UNITS_DIR / name).read_text().replace(SHIPPED_BIN_DIR, bin_dir.rstrip("/"))
        for name, target in INSTALL_PATHS.items()
    }


@click.command("systemd")
@click.option("--bin-dir", default=lambda: sysconfig.get_path("scripts"),
              show_default="this installation's bin directory",
              help="Where the aliasd and gunicorn commands are.")
@click.option("--write", "root", type=click.Path(file_okay=False),
              help="Write the files under this root ('/' installs them) instead of printing.")
def systemd(bin_dir: str, root: str | None) -> None:
    """Print (or write) systemd units, sysusers and tmpfiles entries for aliasd."""
    files = rendered_files(bin_dir)
    if root is None:
        for target, content in files.items():
            click.echo(f"# ==> {target} <==")
            click.echo(content)
        click.echo("# then: systemd-sysusers; systemd-tmpfiles --create; systemctl daemon-reload;\n"
                   "# systemctl enable --now aliasd-lookupd aliasd-milter aliasd-web "
                   "aliasd-postfix-reload.path aliasd-quarantine.path "
                   "aliasd-quarantine-purge.timer")
        return
    for target, content in files.items():
        path = Path(root) / target.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        click.echo(f"wrote {path}")


def register(group: click.Group) -> None:
    group.add_command(systemd)

"""The ``aliasd`` command: click through Flask's CLI (an ``AppGroup``, which needs no
app to list or run commands). Each command group lives in its own module and is a few
lines calling ``aliasd.core``."""

from __future__ import annotations

import click
from flask.cli import AppGroup

from aliasd import __version__
from aliasd.cli import (
    aliases,
    blocklist,
    db,
    dkim,
    domains,
    lookupd,
    mailauth,
    milter,
    postfix,
    quarantine,
    scan,
    systemd,
    up,
    users,
)
from aliasd.cli.common import CliState, CommandErrors


class AliasdGroup(CommandErrors, AppGroup):
    """Flask's AppGroup, with the failures CommandErrors names as clear errors."""


@click.group(cls=AliasdGroup)
@click.version_option(__version__, prog_name="aliasd")
@click.pass_context
def main(ctx: click.Context) -> None:
    """aliasd: per-site disposable addresses for Postfix."""
    ctx.ensure_object(CliState)


for _module in (db, users, domains, aliases, milter, lookupd, postfix, blocklist, scan, up,
                systemd, dkim, mailauth, quarantine):
    _module.register(main)

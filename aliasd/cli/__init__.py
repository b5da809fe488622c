"""The ``aliasd`` command: click through Flask's CLI. Each command group lives in its
own module and is a few lines calling ``aliasd.core``."""

from __future__ import annotations

import click
from flask.cli import FlaskGroup

from aliasd.cli import aliases, blocklist, db, domains, lookupd, milter, postfix, scan, up, users
from aliasd.cli.common import CliState


def _create_app():
    from aliasd.web import create_app

    return create_app()


@click.group(
    cls=FlaskGroup,
    create_app=_create_app,
    add_default_commands=False,
    load_dotenv=False,
    set_debug_flag=False,
)
@click.pass_context
def main(ctx: click.Context) -> None:
    """aliasd: per-site disposable addresses for Postfix."""
    ctx.ensure_object(CliState)


for _module in (db, users, domains, aliases, milter, lookupd, postfix, blocklist, scan, up):
    _module.register(main)

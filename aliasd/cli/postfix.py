"""aliasd postfix-config: print the main.cf lines for this install."""

from __future__ import annotations

import click

from aliasd.cli.common import state
from aliasd.postfix.config_lines import render


@click.command("postfix-config")
def postfix_config() -> None:
    """Print the Postfix main.cf lines that wire Postfix to aliasd (add them with
    'postconf -e' or paste them into main.cf, then 'postfix reload')."""
    click.echo(render(state().settings), nl=False)


def register(group: click.Group) -> None:
    group.add_command(postfix_config)

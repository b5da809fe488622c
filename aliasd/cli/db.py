"""aliasd db upgrade | current"""

from __future__ import annotations

import click

from aliasd.cli.common import state
from aliasd.mailauth.provision import provision_all


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def upgrade(revision: str) -> None:
    """Apply the migrations (creates the SQLite file on first run)."""
    database = state().database(check_schema=False)
    try:
        notes = database.upgrade(revision)
    except Exception as exc:
        raise click.ClickException(f"upgrade failed: {exc}") from exc
    click.echo(f"database at revision {database.current_revision()}")
    for line in notes:
        click.echo(line, err=True)
    for line in provision_all(state().settings, database):
        click.echo(line, err=True)  # notes; stdout stays the one revision line


@db_group.command("current")
def current() -> None:
    """Print the schema revision of the database and of this aliasd."""
    database = state().database(check_schema=False)
    click.echo(f"database: {database.current_revision() or '(none)'}")
    click.echo(f"code:     {database.head_revision()}")


def register(group: click.Group) -> None:
    group.add_command(db_group)

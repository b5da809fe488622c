"""aliasd user add | list"""

from __future__ import annotations

import sys

import click

from aliasd.cli.common import fail_on_domain_errors, state
from aliasd.core import aliases as core


@click.group("user")
def user_group() -> None:
    """Users: owners of domains and aliases."""


@user_group.command("add")
@click.argument("username")
@click.option("--mailbox", required=True, help="The real mailbox aliases forward to.")
@click.option("--admin", is_flag=True, help="May see and manage every user's aliases.")
@click.option("--password-stdin", is_flag=True, help="Read a local password from standard input.")
@fail_on_domain_errors
def add(username: str, mailbox: str, admin: bool, password_stdin: bool) -> None:
    """Add a user."""
    password_hash = None
    if password_stdin:
        from aliasd.core.passwords import hash_password

        password = sys.stdin.readline().rstrip("\r\n")
        if len(password) < 8:
            raise click.ClickException("the password must be at least 8 characters")
        password_hash = hash_password(password)
    with state().database().session() as session:
        user = core.create_user(
            session, username, mailbox, is_admin=admin, password_hash=password_hash
        )
        click.echo(f"user {user.username} <{user.mailbox}>{' (admin)' if admin else ''} added")


@user_group.command("list")
def list_users() -> None:
    """List users."""
    from sqlalchemy import select

    from aliasd.models import User

    with state().database().session() as session:
        for user in session.scalars(select(User).order_by(User.username)):
            flag = " admin" if user.is_admin else ""
            click.echo(f"{user.username}\t{user.mailbox}\t{user.auth_source}{flag}")


def register(group: click.Group) -> None:
    group.add_command(user_group)

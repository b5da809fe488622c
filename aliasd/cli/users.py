"""aliasd user add | list | passwd | sign-out"""

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
        from aliasd.core.accounts import check_new_password
        from aliasd.core.passwords import hash_password

        password = sys.stdin.readline().rstrip("\r\n")
        check_new_password(password)
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


@user_group.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@fail_on_domain_errors
def passwd(username: str, password_stdin: bool) -> None:
    """Set a local user's password (asked twice unless --password-stdin); every web
    session of the user ends."""
    from aliasd.core.accounts import set_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
    with state().database().session() as session:
        user = core.get_user(session, username)
        set_password(session, user, password)
        click.echo(f"password of {user.username} changed; their web sessions are signed out")


@user_group.command("sign-out")
@click.argument("username")
@fail_on_domain_errors
def sign_out(username: str) -> None:
    """End every web session of a user (a lost laptop, a copied cookie). API tokens
    stay; revoke those in the web app."""
    from aliasd.core.accounts import end_sessions

    with state().database().session() as session:
        user = core.get_user(session, username)
        end_sessions(user)
        click.echo(f"every web session of {user.username} is signed out")


def register(group: click.Group) -> None:
    group.add_command(user_group)

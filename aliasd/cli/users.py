"""aliasd user add | list | set | passwd | sign-out"""

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
    from aliasd.core.accounts import create_local_user

    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None
    with state().database().session() as session:
        user = create_local_user(session, username, mailbox, password, is_admin=admin)
        click.echo(f"user {user.username} <{user.mailbox}>{' (admin)' if admin else ''} added")


@user_group.command("list")
def list_users() -> None:
    """List users."""
    from aliasd.core.accounts import list_users as all_users

    with state().database().session() as session:
        for user in all_users(session):
            flag = " admin" if user.is_admin else ""
            if user.directory_missing_since is not None:
                flag += " gone-from-directory"  # sessions and tokens refused
            click.echo(f"{user.username}\t{user.mailbox}\t{user.auth_source}{flag}")


@user_group.command("set")
@click.argument("username")
@click.option("--mailbox", help="New real mailbox; aliases forwarding to the old one follow.")
@click.option("--display-name", help="Name shown in the web app (empty: the user name).")
@click.option("--admin/--no-admin", default=None, help="Grant or take away the admin role.")
@fail_on_domain_errors
def set_(username: str, mailbox: str | None, display_name: str | None,
         admin: bool | None) -> None:
    """Change a user's mailbox, display name or admin role (the same rules as the web
    app's admin pages)."""
    from aliasd.core import accounts

    if mailbox is None and display_name is None and admin is None:
        raise click.UsageError("nothing to change: give --mailbox, --display-name or --admin")
    with state().database().session() as session:
        user = core.get_user(session, username)
        if display_name is not None:
            accounts.set_display_name(user, display_name)
        if admin is not None:
            accounts.set_admin(session, user, admin)
        if mailbox is not None:
            moved = accounts.change_mailbox(session, user, mailbox)
            click.echo(f"{moved} alias(es) now forward to {user.mailbox}")
        click.echo(f"user {user.username} updated")


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

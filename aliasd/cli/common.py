"""State shared by CLI commands: settings read once, the database opened on demand."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import click
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from aliasd.config import Settings, SettingsError, load_settings
from aliasd.core.errors import AliasdError
from aliasd.db import Database, SchemaOutdated, get_database

# The id of a stored row (a block rule, a held message): what the databases' 64-bit
# integer keys can hold, so a mistyped number is a usage error, not an overflow.
RECORD_ID = click.IntRange(0, 2**63 - 1)


@dataclass
class CliState:
    _settings: Settings | None = field(default=None)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings()
            except SettingsError as exc:
                raise click.ClickException(f"configuration: {exc}") from exc
        return self._settings

    def database(self, *, check_schema: bool = True) -> Database:
        db = get_database(self.settings)
        if check_schema:
            try:
                db.require_current_schema()
            except SchemaOutdated as exc:
                raise click.ClickException(str(exc)) from exc
            except Exception as exc:  # connection refused, bad URL, ...
                raise click.ClickException(
                    f"cannot open the database: {describe_database_error(exc)}"
                ) from exc
        return db

    def service_database(self, outage_note: str) -> Database:
        """The database for a long-running service: a stale schema is refused, but an
        unreachable database is only a warning (``outage_note`` says what the service does
        meanwhile), so a database outage never stops Postfix's helpers from answering."""
        db = get_database(self.settings)
        try:
            db.require_current_schema()
        except SchemaOutdated as exc:
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            echo_err(f"warning: database unreachable ({exc}); {outage_note}")
        return db


def describe_database_error(exc: BaseException) -> str:
    """What the database said, without the SQL statement and its parameters that
    SQLAlchemy appends (noise to a reader; a password hash among them)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {str(exc.orig).strip()}"
    return str(exc)


class CommandErrors(click.Group):
    """Failures no command can prevent end with one clear line and exit status 1, never a
    traceback: a database that fails part-way through (locked past db_timeout, the server
    gone; ``Database.session`` rolled the transaction back), and text that is not UTF-8
    (Python hands such bytes of argv, the environment or stdin on as lone surrogates,
    which no database or hasher accepts)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SQLAlchemyError as exc:
            where = ""
            settings = ctx.find_object(CliState)
            if settings is not None and settings._settings is not None:
                where = f" ({get_database(settings._settings).description})"
            raise click.ClickException(
                f"database error{where}: {describe_database_error(exc)}"
            ) from exc
        except UnicodeEncodeError as exc:
            if "surrogates" not in exc.reason or not isinstance(exc.object, str):
                raise
            text = exc.object if len(exc.object) <= 100 else exc.object[:100] + "..."
            raise click.ClickException(
                f"{text!r} is not UTF-8 text (an argument, variable or input in another "
                "encoding)"
            ) from exc


def state() -> CliState:
    return click.get_current_context().find_object(CliState) or CliState()


class UserError(click.ClickException):
    """An AliasdError shown as 'Error: …' with exit status 1."""


def fail_on_domain_errors(func):
    """Turn AliasdError into a clean click error instead of a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except AliasdError as exc:
            raise UserError(str(exc)) from exc

    return wrapper


def echo_err(message: str) -> None:
    click.echo(message, err=True)
    sys.stderr.flush()

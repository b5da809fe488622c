"""aliasd quarantine list | release | delete | purge: the hold queue's review at the
shell (the web page offers the same per user)."""

from __future__ import annotations

import json

import click

from aliasd.cli.common import RECORD_ID, echo_err, fail_on_domain_errors, state
from aliasd.core import quarantine as core
from aliasd.core.errors import AliasdError, InvalidTransition
from aliasd.postfix.hold_queue import HoldQueue
from aliasd.scanner import ScannerError, build_scanner
from aliasd.scanner.user_bayes import learner_for


def row_json(row) -> dict:
    return {
        "id": row.id,
        "queue_id": row.queue_id,
        "held_at": row.held_at.isoformat(),
        "owner_id": row.owner_id,
        "alias": row.alias_address,
        "sender": row.envelope_sender,
        "from": row.from_header,
        "subject": row.subject,
        "score": row.score,
        "symbols": row.symbols,
        "state": row.state,
        "requested": row.requested,
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "decided_by": row.decided_by,
    }


def learner(settings, database, owner_id: int | None = None) -> core.Learner:
    scanner = build_scanner(settings, database)
    teach = learner_for(settings, database, owner_id, scanner.learn)

    def learn(raw: bytes, is_spam: bool) -> str:
        try:
            return teach(raw, is_spam)
        except ScannerError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            close = getattr(scanner, "close", None)
            if close:
                close()

    return learn


@click.group("quarantine")
def group() -> None:
    """Messages held for review in Postfix's hold queue."""


@group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@click.option("--all", "show_all", is_flag=True, help="Also released, deleted and purged ones.")
@click.option("--user", "username", help="Only this user's messages.")
@fail_on_domain_errors
def list_cmd(as_json: bool, show_all: bool, username: str | None) -> None:
    """List held messages (newest first)."""
    from aliasd.core.aliases import get_user

    db = state().database()
    with db.session() as session:
        owner = get_user(session, username) if username else None
        rows = core.visible(session, owner, state=None if show_all else "held")
        if owner is not None and owner.is_admin:  # an admin's own, not everyone's
            rows = [r for r in rows if r.owner_id == owner.id]
        data = [row_json(r) for r in rows]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data:
        click.echo("no messages held")
    for d in data:
        click.echo(f"{d['id']:>6}  {d['held_at'][:16]}  {d['score']:6.2f}  {d['state']:<8}  "
                   f"{d['alias']}  from {d['sender'] or '<>'}  {d['subject'] or ''}")


def carry_out(settings, db, message_id: int, action: str, learn: bool, actor: str) -> str:
    """Release or delete one held message now (runs postsuper); what happened, as text.
    Raises AliasdError (already decided, gone from Postfix, ...)."""
    step = core.release if action == "release" else core.delete
    try:
        with db.session() as session:
            row = core.get_for(session, message_id, None)
            step(session, HoldQueue(settings), row, actor=actor)
            row.requested = None
            verb, sample_id, owner_id = row.state, row.sample_id, row.owner_id
    except InvalidTransition:
        with db.session() as session:  # Postfix lost it: the list must say so
            row = core.get_for(session, message_id, None)
            core.mark_gone(session, row)
            row.requested = None
        raise
    outcome = None
    if learn:
        try:
            outcome = core.learn_from(db, sample_id, learner(settings, db, owner_id),
                                      is_spam=action == "delete")
        except (AliasdError, click.ClickException) as exc:  # done, but not learned
            message = exc.message if isinstance(exc, click.ClickException) else str(exc)
            raise click.ClickException(f"quarantined message {message_id}: {verb}, "
                                       f"but the filter could not learn it: {message}") from exc
    return f"quarantined message {message_id}: {verb}" + (
        f" (learning: {outcome})" if outcome else "")


def _decide(message_id: int, learn: bool, action: str) -> None:
    st = state()
    click.echo(carry_out(st.settings, st.database(), message_id, action, learn, "cli"))


@group.command("release")
@click.argument("message_id", type=RECORD_ID)
@click.option("--learn-ham", is_flag=True, help="Also teach the filter it was not spam.")
@fail_on_domain_errors
def release(message_id: int, learn_ham: bool) -> None:
    """Deliver a held message as it arrived."""
    _decide(message_id, learn_ham, "release")


@group.command("delete")
@click.argument("message_id", type=RECORD_ID)
@click.option("--learn-spam", is_flag=True, help="Also teach the filter it was spam.")
@fail_on_domain_errors
def delete(message_id: int, learn_spam: bool) -> None:
    """Delete a held message."""
    _decide(message_id, learn_spam, "delete")


@group.command("apply")
def apply() -> None:
    """Carry out releases and deletions asked for on the web (quarantine_release_mode =
    queued); run as root by the aliasd-quarantine.path unit when they are asked for."""
    st = state()
    db = st.database()
    with db.session() as session:
        pending = [(r.id, r.requested, r.decided_by or "web") for r in core.requested(session)]
    failed = 0
    for message_id, request, actor in pending:
        action, _, learn = request.partition("+")
        try:
            click.echo(carry_out(st.settings, db, message_id, action, bool(learn), actor))
        except (AliasdError, click.ClickException) as exc:
            failed += 1
            text = exc.format_message() if isinstance(exc, click.ClickException) else str(exc)
            # carry_out's own messages already name the message
            prefix = "" if text.startswith("quarantined message") else f"quarantined message {message_id}: "
            echo_err(prefix + text)
    if failed:
        raise click.ClickException(f"{failed} of {len(pending)} requests failed")


@group.command("digest")
@click.option("--hours", type=float, default=None,
              help="Only messages held within this many hours (default: all not yet listed).")
@click.option("--force", is_flag=True, help="Send even when quarantine_digest is off.")
def digest(hours: float | None, force: bool) -> None:
    """Mail each owner the messages held for them since their last digest (off unless
    quarantine_digest is on)."""
    import subprocess

    from aliasd.core.digest import digests, mark_sent

    st = state()
    if not (st.settings.quarantine_digest or force):
        click.echo("quarantine_digest is off: nothing sent")
        return
    db = st.database()
    with db.session() as session:
        mails = digests(session, st.settings, hours=hours)
    for mail in mails:
        to = mail.message["To"]
        try:
            proc = subprocess.run(st.settings.sendmail_command, input=mail.message.as_bytes(),
                                  capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise click.ClickException(f"cannot run {st.settings.sendmail_command[0]}: {exc}") from exc
        if proc.returncode != 0:
            raise click.ClickException(
                f"sendmail refused the digest to {to}: "
                f"{proc.stderr.decode(errors='replace').strip()}")
        with db.session() as session:  # listed: the next digest does not list them again
            mark_sent(session, mail)
        click.echo(f"digest sent to {to}")
    if not mails:
        click.echo("nothing held: no digest sent")


@group.command("purge")
@fail_on_domain_errors
def purge() -> None:
    """Delete held messages past quarantine_keep_days and drop learning copies past
    learn_keep_days (run daily, e.g. from the systemd timer or cron)."""
    st = state()
    with st.database().session() as session:
        result = core.purge(session, HoldQueue(st.settings), st.settings)
    click.echo(f"held messages deleted: {result.held_deleted}, "
               f"learning copies dropped: {result.samples_dropped}")


@group.command("threshold")
@click.argument("username")
@click.argument("value", required=False)
@fail_on_domain_errors
def threshold(username: str, value: str | None) -> None:
    """Show or set USERNAME's quarantine score: a number, 0 (never hold), or
    'default' (the server's quarantine_score)."""
    from aliasd.core.aliases import get_user

    st = state()
    with st.database().session() as session:
        user = get_user(session, username)
        if value is not None:
            if value == "default":
                number = None
            else:
                try:
                    number = float(value)
                except ValueError as exc:
                    raise click.BadParameter("a number, 0 or 'default'") from exc
            core.set_user_threshold(session, st.settings, user, number)
        own = user.quarantine_score
        used = core.effective_threshold(st.settings, own)
    source = "server default" if own is None else "own setting"
    click.echo(f"{username}: " + (f"held from score {used:g}" if used else "never held")
               + f" ({source})")


def register(main: click.Group) -> None:
    main.add_command(group)

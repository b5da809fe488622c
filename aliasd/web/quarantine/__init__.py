"""Review pages: held messages (each user theirs, admins all), release or delete
them, teach the filter from recent messages, and the public one-click page that
forwarded mail links to. Rules live in aliasd.core.quarantine / aliasd.core.oneclick."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm

from aliasd.core import oneclick
from aliasd.core import quarantine as core
from aliasd.core.errors import AliasdError, InvalidTransition, NotFound
from aliasd.db import get_database
from aliasd.postfix.hold_queue import HoldQueue
from aliasd.scanner import ScannerError, build_scanner
from aliasd.scanner.user_bayes import learner_for
from aliasd.web.context import db_session, settings
from aliasd.web.permissions import current_user, login_required, nav_item, public

log = logging.getLogger(__name__)
bp = Blueprint("quarantine", __name__)
nav_item(bp, "Quarantine", "quarantine.index")


class CsrfForm(FlaskForm):
    """CSRF only."""


@bp.app_template_global("recent_messages_for_learning")
def recent_messages_for_learning(alias) -> list:
    """For the alias detail page's "this was spam / not spam" buttons."""
    return core.recent_samples(db_session(), alias.id)


def _learn(sample_id: int | None, owner_id: int, is_spam: bool) -> str:
    database = get_database(settings())
    scanner = build_scanner(settings(), database)
    learn = learner_for(settings(), database, owner_id, scanner.learn)
    try:
        return core.learn_from(database, sample_id, learn, is_spam=is_spam)
    except ScannerError as exc:
        raise AliasdError(f"the filter could not learn it: {exc}") from exc
    finally:
        close = getattr(scanner, "close", None)
        if close:
            close()


@bp.get("/quarantine/")
@login_required
def index():
    user = current_user()
    rows = core.visible(db_session(), user, limit=core.VISIBLE_AT_ONCE)
    total = (core.visible_count(db_session(), user) if len(rows) >= core.VISIBLE_AT_ONCE
             else len(rows))
    return render_template("quarantine/list.html", rows=rows, total=total, form=CsrfForm(),
                           own_score=user.quarantine_score,
                           used=core.effective_threshold(settings(), user.quarantine_score),
                           reject=settings().action_reject)


@bp.post("/quarantine/threshold")
@login_required
def threshold():
    """The signed-in user's own quarantine score (empty: the server's)."""
    CsrfForm()
    raw = (request.form.get("score") or "").strip()
    s = db_session()
    try:
        value = float(raw) if raw else None
    except ValueError:
        flash("Enter a number, 0 to never hold mail, or nothing for the server's setting.",
              "error")
        return redirect(url_for("quarantine.index"))
    try:
        core.set_user_threshold(s, settings(), current_user(), value)
        s.commit()
        flash("Saved.", "success")
    except AliasdError as exc:
        s.rollback()
        flash(str(exc), "error")
    return redirect(url_for("quarantine.index"))


@bp.get("/quarantine/<int:message_id>")
@login_required
def show(message_id: int):
    try:
        row = core.get_for(db_session(), message_id, current_user())
    except NotFound:
        abort(404)
    return render_template("quarantine/show.html", row=row, form=CsrfForm())


@bp.post("/quarantine/<int:message_id>/decide")
@login_required
def decide(message_id: int):
    """``action=release`` or ``action=delete``; ``learn=1`` also teaches the filter."""
    CsrfForm()  # CSRF is checked by CSRFProtect before we get here
    action = request.form.get("action")
    if action not in ("release", "delete"):
        abort(400, "Choose release or delete.")
    s = db_session()
    try:
        row = core.get_for(s, message_id, current_user())
    except NotFound:
        abort(404)
    learn = request.form.get("learn") == "1"
    if settings().quarantine_release_mode == "queued":
        _request(s, row, action, learn)
    else:
        _carry_out(s, row, message_id, action, learn)
    return redirect(url_for("quarantine.index"))


def _request(s, row, action: str, learn: bool) -> None:
    """Queued mode: record the decision; root's `aliasd quarantine apply` runs postsuper."""
    try:
        core.request_decision(row, action + ("+learn" if learn else ""), current_user().username)
        s.commit()
    except AliasdError as exc:
        s.rollback()
        flash(str(exc), "error")
        return
    try:
        Path(settings().quarantine_requests_file).touch()  # wakes the systemd path unit
    except OSError as exc:  # the periodic run still picks it up
        log.warning("cannot touch %s: %s", settings().quarantine_requests_file, exc)
    flash(f"{'Release' if action == 'release' else 'Deletion'} of message {row.id} requested; "
          "it is carried out within a few seconds.", "success")


def _carry_out(s, row, message_id: int, action: str, learn: bool) -> None:
    """Direct mode: run postsuper from here (the web app must be allowed to)."""
    step = core.release if action == "release" else core.delete
    try:
        step(s, HoldQueue(settings()), row, actor=current_user().username)
        s.commit()
    except InvalidTransition as exc:
        s.rollback()
        core.mark_gone(s, core.get_for(s, message_id, current_user()))
        s.commit()
        flash(str(exc), "error")
        return
    except AliasdError as exc:
        s.rollback()
        flash(str(exc), "error")
        return
    done = f"{'Released' if action == 'release' else 'Deleted'} message {message_id}."
    if not learn:
        flash(done, "success")
        return
    try:  # it is released (deleted) whatever learning does: say both
        outcome = _learn(row.sample_id, row.owner_id, is_spam=action == "delete")
    except AliasdError as exc:
        flash(done, "success")
        flash(f"{exc}", "error")
        return
    flash(done + f" The filter {outcome} it as {'spam' if action == 'delete' else 'not spam'}.",
          "success")


@bp.post("/learn/<int:sample_id>")
@login_required
def learn(sample_id: int):
    """"This was spam" (``verdict=spam``) / "this was not spam" (``verdict=ham``)."""
    CsrfForm()
    verdict = request.form.get("verdict")
    if verdict not in ("spam", "ham"):
        abort(400, "Say spam or ham.")
    try:
        sample = core.sample_for(db_session(), sample_id, current_user())
    except NotFound:
        abort(404)
    alias_id, owner_id = sample.alias_id, sample.owner_id
    db_session().rollback()  # learning writes through its own connection
    try:
        outcome = _learn(sample_id, owner_id, is_spam=verdict == "spam")
        flash(f"The filter {outcome} this message as {'spam' if verdict == 'spam' else 'not spam'}.",
              "success")
    except AliasdError as exc:
        flash(str(exc), "error")
    if alias_id is None:
        return redirect(url_for("aliases.index"))
    return redirect(url_for("aliases.detail", alias_id=alias_id))


# --- one-click links in forwarded mail (no sign-in: the signed token is the permission) ---
def _read(token: str):
    try:
        return oneclick.read_token(settings(), token), None
    except AliasdError as exc:
        return None, str(exc)


@bp.get("/oneclick/<token>")
@public
def oneclick_page(token: str):
    """Shows what the link does; only the POST acts (link scanners prefetch GETs)."""
    click, problem = _read(token)
    if click is None:
        return render_template("quarantine/oneclick.html", problem=problem), 400
    return render_template("quarantine/oneclick.html", problem=None, token=token,
                           what=oneclick.describe(db_session(), click))


@bp.post("/oneclick/<token>")
@public
def oneclick_do(token: str):
    """The confirm button, and RFC 8058 one-click unsubscribe (a POST with
    ``List-Unsubscribe=One-Click``) from mail clients."""
    click, problem = _read(token)
    if click is None:
        return render_template("quarantine/oneclick.html", problem=problem), 400
    s = db_session()
    try:
        done = oneclick.apply(s, click)
        s.commit()
    except AliasdError as exc:
        s.rollback()
        return render_template("quarantine/oneclick.html", problem=str(exc)), 409
    return render_template("quarantine/oneclick.html", problem=None, done=done)


def exempt_from_csrf(csrf) -> None:
    # The signed token in the URL is the only permission; mail clients POST without
    # any cookie or form token (RFC 8058).
    csrf.exempt(oneclick_do)

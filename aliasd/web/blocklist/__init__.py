"""Blocklist page: the header_checks rules with their source (auto, manual, imported),
hits, creation date, and enable/disable. Admins see and change every rule; users see the
rules made from their mail (auto-block), but every rule is server-wide, so only admins
turn them on or off. Every committed change is published to Postfix at once
(aliasd.postfix.publisher) and the page says whether Postfix took it (a refused table or
rule, or a failed reload, is shown, never silent)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from aliasd.core import blocking
from aliasd.core.errors import AliasdError
from aliasd.models import BlockRule
from aliasd.postfix.publisher import HeaderChecksError, wait_for_publish
from aliasd.web.context import db_session, settings
from aliasd.web.permissions import admin_required, current_user, login_required, nav_item

bp = Blueprint("blocklist", __name__, url_prefix="/blocklist")
nav_item(bp, "Blocklist", "blocklist.index")


def flash_publish_outcome() -> bool:
    """Wait for the table this request's commit is publishing; flash what went wrong."""
    outcome = wait_for_publish(settings())
    if isinstance(outcome, HeaderChecksError):
        flash(f"{outcome}: {'; '.join(outcome.problems)}", "error")
        return False
    if isinstance(outcome, Exception):
        flash(f"The header_checks table could not be written: {outcome}", "error")
        return False
    if outcome is None:
        return True
    for refused in outcome.refused:
        flash(refused.reason, "error")
    if outcome.reload_error:
        flash(f"The table is written but Postfix was not reloaded: {outcome.reload_error}",
              "error")
    return outcome.ok


def _visible(query):
    user = current_user()
    return query if user.is_admin else query.where(BlockRule.owner_id == user.id)


@bp.get("/")
@login_required
def index():
    show = request.args.get("show", "all")
    query = _visible(select(BlockRule))
    if show in ("auto", "manual", "imported"):
        query = query.where(BlockRule.source == show)
    rules = list(db_session().scalars(query.order_by(BlockRule.id.desc()).limit(2000)))
    return render_template("blocklist/index.html", rules=rules, show=show,
                           table_path=settings().effective_blocklist_file)


@bp.post("/<int:rule_id>/toggle")
@admin_required  # a rule refuses mail for every user
def toggle(rule_id: int):
    s = db_session()
    rule = s.get(BlockRule, rule_id)
    if rule is None:
        abort(404)
    want = request.form.get("enabled") == "1"
    back = redirect(url_for("blocklist.index", show=request.form.get("show", "all")))
    try:
        blocking.set_enabled(s, settings(), rule.id, want)
    except AliasdError as exc:
        s.rollback()
        flash(str(exc), "error")
        return back
    s.commit()
    flash(f"Rule {rule.id} {'enabled' if want else 'disabled'}.", "success")
    flash_publish_outcome()
    return back

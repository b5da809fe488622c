"""Blocklist page: the header_checks rules with their source (auto, manual, imported),
hits, creation date, and enable/disable. Admins see and change every rule; users see and
change the rules they created. Every change rewrites the table at once and says whether
Postfix took it (a refused table or a failed reload is shown, never silent)."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select

from aliasd.models import BlockRule
from aliasd.postfix import header_checks as hc
from aliasd.web.context import db_session, settings
from aliasd.web.permissions import current_user, login_required, nav_item

bp = Blueprint("blocklist", __name__, url_prefix="/blocklist")
nav_item(bp, "Blocklist", "blocklist.index")


def write_table_and_flash() -> bool:
    """Rewrite header_checks from the database; flash what happened."""
    try:
        result = hc.sync_blocklist(settings())
    except hc.HeaderChecksError as exc:
        flash(f"{exc}: {'; '.join(exc.problems)}", "error")
        return False
    except OSError as exc:
        flash(f"The header_checks table could not be written: {exc}", "error")
        return False
    if result.reload_error:
        flash(f"The table is written but Postfix was not reloaded: {result.reload_error}",
              "error")
        return False
    return True


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
@login_required
def toggle(rule_id: int):
    s = db_session()
    rule = s.scalar(_visible(select(BlockRule).where(BlockRule.id == rule_id)))
    if rule is None:
        abort(404)
    want = request.form.get("enabled") == "1"
    rule.enabled = want
    s.commit()
    flash(f"Rule {rule.id} {'enabled' if want else 'disabled'}.", "success")
    write_table_and_flash()
    return redirect(url_for("blocklist.index", show=request.form.get("show", "all")))

"""Spam-source report: sites ranked by spam, per-site page with a server-rendered SVG
chart, leak status with its evidence, known senders, sender domains and sample subjects,
block / burn actions, CSV and JSON export.
Users see their own sites; admins everyone's (or one user's with ``?user=NAME``)."""

from __future__ import annotations

import csv
import io
import json

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from markupsafe import Markup
from sqlalchemy import select

from aliasd.core import (
    block_protection,
    blocking,
    protected_senders,
    reports,
    sender_blocks,
    site_report,
)
from aliasd.core.errors import AliasdError
from aliasd.models import User
from aliasd.web.blocklist import flash_publish_outcome
from aliasd.web.context import db_session, settings
from aliasd.web.permissions import current_user, login_required, nav_item
from aliasd.web.redirects import same_site_path
from aliasd.web.reports.chart import spam_chart_svg

bp = Blueprint("reports", __name__, url_prefix="/reports")
nav_item(bp, "Spam report", "reports.index")

# New columns go last: readers of the CSV by position keep working.
EXPORT_FIELDS = [
    "site", "owner", "spam", "share", "total", "spam_ratio", "first_spam", "last_spam",
    "sender_domains", "spam_sender_domains", "blocked_sender_domains", "leaked", "leaked_at",
    "status", "reason", "blocked", "burned", "unrelated_since",
]  # fmt: skip


def _period() -> str:
    period = request.args.get("period", "30d")
    return period if period in reports.PERIODS else "30d"


class UnknownUser(LookupError):
    """An admin's user filter names no user."""


def _scope() -> tuple[int | None, str | None]:
    """(owner id filter, user name shown): a user's own sites (a user's filter is
    ignored, so it tells nothing about who exists); an admin's choice."""
    user = current_user()
    if not user.is_admin:
        return user.id, None
    name = request.args.get("user", "").strip()
    if not name:
        return None, None
    other = db_session().scalar(select(User).where(User.username == name))
    if other is None:
        raise UnknownUser(name)
    return other.id, other.username


def _report() -> reports.Report:
    try:
        owner_id, _ = _scope()
    except UnknownUser:
        abort(404)
    limit = min(max(request.args.get("limit", 100, type=int) or 100, 1), 1000)
    return reports.ranking(db_session(), owner_id=owner_id, period=_period(), limit=limit,
                           leak_senders=settings().attribution_leak_senders)


@bp.get("/")
@login_required
def index():
    try:
        _owner_id, scope_name = _scope()
    except UnknownUser as exc:
        # The form again, the name as typed and what is wrong with it; no report.
        return render_template(
            "reports/index.html", report=None, period=_period(), periods=list(reports.PERIODS),
            scope_name=None, typed_user=str(exc),
            user_error=f"There is no user named {str(exc)[:100]!r}.",
        ), 422  # fmt: skip
    report = _report()
    return render_template(
        "reports/index.html", report=report, period=_period(), periods=list(reports.PERIODS),
        scope_name=scope_name,
    )  # fmt: skip


@bp.get("/export.<fmt>")
@login_required
def export(fmt: str):
    report = _report()
    rows = [{k: d[k] for k in EXPORT_FIELDS} for d in (r.as_dict() for r in report.rows)]
    filename = f"aliasd-spam-report-{report.period}"
    if fmt == "json":
        body = json.dumps(
            {"period": report.period, "since": report.since.isoformat() if report.since else None,
             "total_spam": report.total_spam, "total_mail": report.total_mail,
             "sites": report.sites, "rows": rows},
            indent=2,
        )  # fmt: skip
        return Response(body, mimetype="application/json", headers={
            "Content-Disposition": f'attachment; filename="{filename}.json"'})
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _spreadsheet_text(v) for k, v in row.items()})
        return Response(out.getvalue(), mimetype="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{filename}.csv"'})
    abort(404)


def _spreadsheet_text(value):
    """A cell starting with = + - @ (or a tab or CR) would be a formula in a spreadsheet:
    a leading quote keeps it text. Empty cells stay empty."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


def _detail_or_404(owner_id: int, site: str) -> site_report.SiteDetail:
    user = current_user()
    if owner_id != user.id and not user.is_admin:
        abort(404)  # not "403": do not confirm that someone else has this site
    detail = site_report.site_detail(
        db_session(), owner_id, site, period=_period(),
        leak_senders=settings().attribution_leak_senders,
        affiliations_file=settings().attribution_affiliations_file,
        exempt=block_protection.exempt_domains(settings()),
    )  # fmt: skip
    if detail is None:
        abort(404)
    return detail


@bp.get("/site/<int:owner_id>/<path:site>")
@login_required
def site(owner_id: int, site: str):
    detail = _detail_or_404(owner_id, site)
    s = db_session()
    owner = s.get(User, owner_id)
    chart = Markup(spam_chart_svg(detail.days, title=f"Spam per day for {site}"))
    # "for everyone" is offered only where the server-wide rule would be made.
    server_refused = (
        block_protection.server_block_refusals(s, settings(), [x.domain for x in detail.senders])
        if current_user().is_admin else {}
    )
    return render_template(
        "reports/site.html", d=detail, chart=chart, owner=owner, period=_period(),
        periods=list(reports.PERIODS), server_refused=server_refused,
        whose=_whose(owner_id),
    )  # fmt: skip


@bp.post("/site/<int:owner_id>/<path:site>/block")
@login_required
def block(owner_id: int, site: str):
    """Block one sender domain of this site. For a user: for all of their own aliases
    (enforced by the milter; other users are not affected). An admin may choose
    ``scope=server``: a server-wide rule, written to Postfix now."""
    detail = _detail_or_404(owner_id, site)
    back = back_to_page(owner_id, site)
    domain = request.form.get("domain", "").strip().lower()
    # Only domains that actually sent to this site: the form cannot be used to block
    # arbitrary (e.g. big mail provider) domains by editing the request.
    if domain not in {s.domain for s in detail.senders} | set(detail.suggestions):
        flash("That domain did not send mail to this site.", "error")
        return back
    s = db_session()
    user = current_user()
    server_wide = user.is_admin and request.form.get("scope") == "server"
    # The served/mailbox refusal speaks first: it is the one no site change can lift.
    refusal = (block_protection.server_block_refusal(s, settings(), domain) if server_wide
               else block_protection.user_block_refusal(s, owner_id, domain))  # fmt: skip
    if refusal:
        flash(refusal, "error")
        return back
    protected = protected_senders.protections(s, owner_id,
                                              settings().attribution_affiliations_file)
    protection = protected_senders.protection(domain, protected, site)
    if protection is not None:
        flash(f"{domain} is {protection.describe(_whose(owner_id))}: blocking it would refuse "
              "wanted mail. Remove it from the site's senders first if it is not the "
              "site's.", "error")  # fmt: skip
        return back
    try:
        if server_wide:
            rule = blocking.block_domain(s, settings(), domain, source="manual", owner_id=user.id,
                                         note=f"blocked from the report of {site}")  # fmt: skip
        else:
            sender_blocks.add_block(s, owner_id, domain,
                                    note=f"blocked from the report of {site}")  # fmt: skip
        s.commit()
    except AliasdError as exc:
        s.rollback()
        flash(str(exc), "error")
        return back
    if server_wide:
        flash(f"Blocked {domain} for everyone (rule {rule.id}).", "success")
        flash_publish_outcome()
    else:
        flash(f"Blocked {domain} for all {_whose(owner_id)} aliases.", "success")
    return back


@bp.post("/site/<int:owner_id>/<path:site>/unblock")
@login_required
def unblock(owner_id: int, site: str):
    """Remove one of the site owner's own sender blocks (server-wide rules are changed
    on the blocklist page)."""
    _detail_or_404(owner_id, site)
    s = db_session()
    try:
        removed = sender_blocks.remove_block(s, owner_id, request.form.get("block_id", type=int) or 0)
        s.commit()
    except AliasdError:
        s.rollback()
        abort(404)
    flash(f"Unblocked {removed.sender}.", "success")
    return back_to_page(owner_id, site)


def back_to_page(owner_id: int, site: str):
    """Back to the page the form was on (its ``back`` field: the path with the chosen
    period), or the site page; only a path on this site, never another host."""
    target = same_site_path(request.form.get("back"))
    if target:
        return redirect(request.script_root + target)
    return redirect(url_for("reports.site", owner_id=owner_id, site=site))


def detail_owner_name(owner_id: int) -> str:
    owner = db_session().get(User, owner_id)
    return owner.username if owner is not None else "?"


def _whose(owner_id: int) -> str:
    """"your" for the signed-in user's own sites, "alice's" for an admin looking at hers."""
    return "your" if owner_id == current_user().id else f"{detail_owner_name(owner_id)}'s"


from aliasd.web.reports import senders  # noqa: E402,F401 - routes on this blueprint

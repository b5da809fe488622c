"""Alias pages: list (search, sort, pages), create, detail, single and bulk actions."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from wtforms import RadioField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import Length, Optional

from aliasd.core import aliases as core
from aliasd.core import leaks, sender_blocks
from aliasd.models import AliasState
from aliasd.web import service
from aliasd.web.context import db_session
from aliasd.web.permissions import current_user, login_required
from aliasd.web.redirects import same_site_path

bp = Blueprint("aliases", __name__)


class NewAliasForm(FlaskForm):
    site = StringField("Site", validators=[Optional(), Length(max=2000)],
                       render_kw={"placeholder": "https://www.github.com/login or github.com"})
    variant = RadioField(
        "Address style",
        choices=[("site", "Site name (github.com@…)"),
                 ("random", "Site name with a random suffix (github.com.k3f9x@…)")],
        default="site",
    )
    # Choices are checked by service.domain_for (a clear message, one ownership rule).
    domain = SelectField("Domain", choices=[], validate_choice=False)
    local = StringField("Address before the @", validators=[Optional(), Length(max=64)])
    note = TextAreaField("Note", validators=[Optional(), Length(max=2000)])
    destinations = TextAreaField("Forward to other addresses instead", validators=[Optional(), Length(max=5000)])
    preview = SubmitField("Propose address")
    create = SubmitField("Create alias")


class EditAliasForm(FlaskForm):
    note = TextAreaField("Note", validators=[Optional(), Length(max=2000)])
    destinations = TextAreaField("Forwards to", validators=[Optional(), Length(max=5000)])
    save = SubmitField("Save")


class ActionForm(FlaskForm):
    """CSRF only: the fields (ids, action, one, confirm) are read from request.form."""


def _ids() -> list[str]:
    return [i for i in request.form.getlist("ids") if i.strip()][:1000]


@bp.get("/")
@login_required
def index():
    user = current_user()
    args = request.args
    search = args.get("q", "")[:service.MAX_SEARCH]
    sort = args.get("sort", "created")
    state = args.get("state", "")
    page = service.list_aliases(
        db_session(), user, search=search, state=state, sort=sort,
        after=args.get("after"), before=args.get("before"), last=args.get("last") == "1",
    )
    return render_template(
        "aliases/list.html", page=page, q=search, max_search=service.MAX_SEARCH, sort=sort, state=state,
        sorts=[("created", "Newest"), ("last_mail", "Last mail"), ("spam", "Most spam")],
        states=[("", "All but deleted")] + [(s.value, s.value.capitalize()) for s in AliasState],
        form=ActionForm(), domains=service.domains_for(db_session(), user),
    )


@bp.route("/aliases/new", methods=["GET", "POST"])
@login_required
def new():
    user = current_user()
    s = db_session()
    domains = service.domains_for(s, user)
    form = NewAliasForm()
    form.domain.choices = [(d.name, d.name) for d in domains]
    if request.method == "GET" and request.args.get("site"):
        form.site.data = request.args["site"]
    status = 200
    proposal = None
    if domains and form.validate_on_submit():
        random = form.variant.data == "random"
        try:
            if form.preview.data and not form.create.data:
                host = service.normalize_site(form.site.data)
                form.local.data = service.propose_local(host, random=random)
                proposal = f"{form.local.data}@{form.domain.data}"
            else:
                alias = service.create_for_user(
                    s, user, site=form.site.data, domain_name=form.domain.data,
                    local=form.local.data, random=random, note=form.note.data,
                    destinations=(form.destinations.data or "").splitlines(),
                    origin="web",
                )
                s.commit()
                flash(f"Created {alias.address}.", "success")
                return redirect(url_for("aliases.detail", alias_id=alias.id))
        except core.AliasdError as exc:
            s.rollback()
            form.site.errors = [*form.site.errors, str(exc)]
            status = 422
    elif request.method == "POST":
        status = 400 if domains else 422
    return render_template("aliases/new.html", form=form, domains=domains, user=user,
                           proposal=proposal), status


@bp.route("/aliases/<int:alias_id>", methods=["GET", "POST"])
@login_required
def detail(alias_id: int):
    """The alias, its recent messages and sender domains; POST saves note/destinations."""
    s = db_session()
    alias = _alias_or_404(alias_id)
    edit = EditAliasForm()
    status = 200
    if request.method == "GET":
        edit.note.data = alias.note or ""
        edit.destinations.data = "\n".join(alias.destination_list)
    elif edit.validate_on_submit():
        try:
            service.update_alias(s, current_user(), alias, note=edit.note.data,
                                 destinations=(edit.destinations.data or "").splitlines())
            s.commit()
            flash("Saved.", "success")
            return redirect(url_for("aliases.detail", alias_id=alias.id))
        except core.AliasdError as exc:
            s.rollback()
            alias = _alias_or_404(alias_id)
            edit.destinations.errors = [*edit.destinations.errors, str(exc)]
            status = 422
    else:
        status = 400
    return render_detail(alias, edit=edit, status=status)


def render_detail(alias, *, edit=None, status: int = 200, **contact_forms):
    """The alias page; ``edit`` and ``contact_forms`` (``write_form``, ``reply_form``) are
    forms carrying the errors of a refused submission, shown next to their fields."""
    s = db_session()
    if edit is None:
        edit = EditAliasForm(formdata=None)
        edit.note.data = alias.note or ""
        edit.destinations.data = "\n".join(alias.destination_list)
    return render_template(
        "aliases/detail.html", alias=alias, form=ActionForm(), edit=edit,
        events=service.recent_events(s, alias), senders=service.sender_domains(s, alias),
        known=leaks.list_known_senders(s, alias.owner_id, alias.site) if alias.site else None,
        blocks=sender_blocks.list_blocks(s, alias.owner_id, alias_id=alias.id),
        **contacts.page_context(alias, **contact_forms),
    ), status


@bp.post("/aliases/<int:alias_id>/blocks")
@login_required
def add_block(alias_id: int):
    """Block a sender (domain or address) for this alias, or with ``scope=user`` for all
    of the alias owner's aliases. Enforced by the milter; never server-wide."""
    ActionForm()  # CSRF is checked by CSRFProtect before we get here
    s = db_session()
    alias = _alias_or_404(alias_id)
    for_all = request.form.get("scope") == "user"
    try:
        block = sender_blocks.add_block(s, alias.owner_id, request.form.get("sender", "")[:400],
                                        alias=None if for_all else alias,
                                        note=f"blocked on the page of {alias.address}")  # fmt: skip
        s.commit()
    except core.AliasdError as exc:
        s.rollback()
        flash(str(exc), "error")
        return redirect(url_for("aliases.detail", alias_id=alias_id))
    where = "all aliases of " + alias.owner.username if for_all else alias.address
    flash(f"Blocked {block.sender} for {where}.", "success")
    return redirect(url_for("aliases.detail", alias_id=alias_id))


@bp.post("/aliases/<int:alias_id>/blocks/<int:block_id>/remove")
@login_required
def remove_block(alias_id: int, block_id: int):
    ActionForm()
    s = db_session()
    alias = _alias_or_404(alias_id)
    try:
        block = sender_blocks.get_block(s, alias.owner_id, block_id)
        if block.alias_id not in (None, alias.id):
            raise core.NotFound("no such block")
        sender = block.sender
        sender_blocks.remove_block(s, alias.owner_id, block_id)
        s.commit()
    except core.NotFound:
        s.rollback()
        abort(404)
    flash(f"Unblocked {sender}.", "success")
    return redirect(url_for("aliases.detail", alias_id=alias_id))


@bp.post("/aliases/action")
@login_required
def action():
    """Single (button ``one=ACTION:ID``) and bulk (``ids`` + ``action``) actions; burn
    and forget show a confirmation page first (``confirm=yes`` to proceed)."""
    ActionForm()  # CSRF is checked by CSRFProtect before we get here
    user = current_user()
    s = db_session()
    one = request.form.get("one", "")
    if one:
        name, _, ident = one.partition(":")
        ids = [ident]
    else:
        name = request.form.get("action", "")
        ids = _ids()
    if name not in service.ACTIONS and name != "forget":
        flash("Choose an action.", "error")
        return redirect(_back())
    if not ids:
        flash("Select at least one alias.", "error")
        return redirect(_back())
    try:
        targets = [service.alias_for(s, user, i) for i in ids]
    except core.NotFound:
        abort(404)
    if name in service.CONFIRM_ACTIONS and request.form.get("confirm") != "yes":
        return render_template("aliases/confirm.html", action=name, aliases=targets,
                               form=ActionForm(), back=_back(),
                               back_path=request.form.get("back", ""))
    done, errors = [], []
    for alias in targets:
        address = alias.address
        try:
            service.apply_action(s, user, alias, name)
            done.append(address)
        except core.AliasdError as exc:
            errors.append(str(exc))
    s.commit()
    past = {"disable": "disabled", "enable": "enabled", "burn": "burned",
            "delete": "deleted", "forget": "forgotten"}[name]
    if done:
        flash(f"{len(done)} alias(es) {past}: {', '.join(done[:10])}"
              f"{' …' if len(done) > 10 else ''}", "success")
    for message in errors[:10]:
        flash(message, "error")
    if name in ("forget", "delete") and request.form.get("from_detail"):
        return redirect(url_for("aliases.index"))
    return redirect(_back())


def _back() -> str:
    """Where the action was started from (a same-site path only)."""
    target = same_site_path(request.form.get("back"))
    return request.script_root + target if target else url_for("aliases.index")


def _alias_or_404(alias_id: int):
    try:
        return service.alias_for(db_session(), current_user(), alias_id)
    except core.NotFound:
        abort(404)


from aliasd.web.aliases import contacts  # noqa: E402 - registers its routes on bp

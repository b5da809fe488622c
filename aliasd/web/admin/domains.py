"""Admin: the managed domains. Adding and changing one goes through core's
create_domain / update_domain (the same as ``aliasd domain add|set``)."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for

from aliasd.core import accounts
from aliasd.core import aliases as core
from aliasd.mailauth.provision import provision_domain
from aliasd.models import Domain, User
from aliasd.web.admin import bp
from aliasd.web.admin.forms import DomainForm, NewDomainForm
from aliasd.web.admin.profile import sentence
from aliasd.web.context import db_session, settings
from aliasd.web.permissions import admin_required, current_user


def _owner_choices() -> list[tuple[int, str]]:
    return [(u.id, f"{u.username} <{u.mailbox}>") for u in accounts.list_users(db_session())]


def _domain_or_404(domain_id: int) -> Domain:
    domain = db_session().get(Domain, domain_id)
    if domain is None:
        abort(404)
    return domain


def _gate_error(form, exc: core.AliasdError) -> None:
    """Put core's message on the field it is about."""
    text = str(exc)
    field = (form.catch_all_regex if "regex" in text else
             form.max_per_hour if "cap" in text else
             form.catch_all if "policy" in text else
             getattr(form, "name", form.catch_all))
    field.errors = [*field.errors, sentence(exc)]


@bp.route("/domains", endpoint="domains", methods=["GET", "POST"])
@admin_required
def domains_page():
    s = db_session()
    form = NewDomainForm()
    form.owner.choices = _owner_choices()
    if request.method == "GET":
        # The admin adding a domain most often keeps it; the first user by name is
        # nobody in particular.
        form.owner.data = current_user().id
    status = 200
    if form.validate_on_submit():
        owner = s.get(User, form.owner.data)
        try:
            if owner is None:
                raise core.NotFound("that user no longer exists")
            domain = core.create_domain(
                s, form.name.data, owner, catch_all=form.catch_all.data,
                catch_all_regex=(form.catch_all_regex.data or "").strip() or None,
                catch_all_max_per_hour=form.max_per_hour.data,
            )
            s.commit()
            provision_domain(settings(), domain.name)
            flash(f"Domain {domain.name} added; its catch-all is {domain.catch_all}.", "success")
            return redirect(url_for("admin.domain", domain_id=domain.id))
        except core.AliasdError as exc:
            s.rollback()
            if owner is None:
                form.owner.errors = [*form.owner.errors, sentence(exc)]
            else:
                _gate_error(form, exc)
            status = 422
    elif request.method == "POST":
        status = 400
    return render_template("admin/domains.html", form=form,
                           domains=core.list_domains(s)), status


@bp.route("/domains/<int:domain_id>", endpoint="domain", methods=["GET", "POST"])
@admin_required
def domain_page(domain_id: int):
    s = db_session()
    domain = _domain_or_404(domain_id)
    form = DomainForm()
    status = 200
    if request.method == "GET":
        form.catch_all.data = domain.catch_all
        form.catch_all_regex.data = domain.catch_all_regex or ""
        form.max_per_hour.data = domain.catch_all_max_per_hour
    elif form.validate_on_submit():
        try:
            core.update_domain(
                s, domain, catch_all=form.catch_all.data,
                catch_all_regex=(form.catch_all_regex.data or "").strip() or None,
                catch_all_max_per_hour=form.max_per_hour.data,
            )
            s.commit()
            flash(f"Domain {domain.name} saved.", "success")
            return redirect(url_for("admin.domain", domain_id=domain.id))
        except core.AliasdError as exc:
            s.rollback()
            domain = _domain_or_404(domain_id)
            _gate_error(form, exc)
            status = 422
    else:
        status = 400
    return render_template("admin/domain.html", form=form, domain=domain), status

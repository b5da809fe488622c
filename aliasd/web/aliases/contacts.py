"""An alias's contacts on its page: "write to someone", disable, enable, delete a
reverse alias, and the alias's reply settings (display name, forwarding mode)."""

from __future__ import annotations

from flask import flash, redirect, url_for
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from aliasd.core import aliases as core
from aliasd.core import reverse_aliases as ra
from aliasd.core.reply_headers import HeaderInjection, check_display_name
from aliasd.web.admin.profile import sentence
from aliasd.web.aliases import ActionForm, _alias_or_404, bp, render_detail
from aliasd.web.context import db_session, settings
from aliasd.web.permissions import login_required

MODE_CHOICES = [("", "As the domain says"),
                ("preserve", "Preserve: original From:, reverse alias in Reply-To:"),
                ("rewrite", "Rewrite: From: the reverse alias, signed by aliasd")]


def display_name(_form, field) -> None:
    """Core's rule for a display name (length, no line breaks), as the field's error."""
    try:
        field.data = check_display_name(field.data)
    except HeaderInjection as exc:
        raise ValidationError(sentence(exc)) from None


class WriteToForm(FlaskForm):
    correspondent = StringField(
        "Their address",
        validators=[DataRequired("Give the address you want to write to."),
                    Length(max=320, message="An address is at most 320 characters.")],
        render_kw={"placeholder": "someone@example.com", "autocomplete": "off"})
    name = StringField("Their name (optional)", validators=[Optional(), display_name])
    write = SubmitField("Make the address to write to")


class ReplySettingsForm(FlaskForm):
    reply_name = StringField("Your name on mail sent as this alias",
                             validators=[Optional(), display_name])
    reply_mode = SelectField("How forwarded mail shows the reverse alias",
                             choices=MODE_CHOICES, default="")
    save_reply = SubmitField("Save reply settings")


def page_context(alias, *, write_form: WriteToForm | None = None,
                 reply_form: ReplySettingsForm | None = None) -> dict:
    """What the alias page shows of its contacts; a form given is one that was refused,
    shown again with its errors."""
    if reply_form is None:
        reply_form = ReplySettingsForm(prefix="reply", formdata=None)
        reply_form.reply_name.data = alias.reply_name or ""
        reply_form.reply_mode.data = alias.reply_mode or ""
    contacts = ra.list_for_alias(db_session(), alias.id)
    return {"contacts": contacts,
            "write_form": write_form or WriteToForm(prefix="write", formdata=None),
            "reply_form": reply_form, "refused_total": sum(c.refused_count for c in contacts)}


def _back(alias_id: int):
    return redirect(url_for("aliases.detail", alias_id=alias_id) + "#contacts")


@bp.post("/aliases/<int:alias_id>/contacts")
@login_required
def write_to(alias_id: int):
    s = db_session()
    alias = _alias_or_404(alias_id)
    form = WriteToForm(prefix="write")
    if not form.validate_on_submit():
        return render_detail(alias, write_form=form, status=400)
    try:
        row = ra.write_to(s, alias, form.correspondent.data, name=form.name.data,
                          reply_domain=settings().reply_domain)
        s.commit()
    except core.AliasdError as exc:
        s.rollback()
        form.correspondent.errors = [*form.correspondent.errors, sentence(exc)]
        return render_detail(_alias_or_404(alias_id), write_form=form, status=422)
    flash(f"Write to {row.address} from your own mailbox: it reaches {row.correspondent} "
          f"from {alias.address}.", "success")
    return _back(alias_id)


@bp.post("/aliases/<int:alias_id>/contacts/<int:contact_id>/disable")
@login_required
def disable_contact(alias_id: int, contact_id: int):
    return _contact_action(alias_id, contact_id, "disable")


@bp.post("/aliases/<int:alias_id>/contacts/<int:contact_id>/enable")
@login_required
def enable_contact(alias_id: int, contact_id: int):
    return _contact_action(alias_id, contact_id, "enable")


@bp.post("/aliases/<int:alias_id>/contacts/<int:contact_id>/delete")
@login_required
def delete_contact(alias_id: int, contact_id: int):
    return _contact_action(alias_id, contact_id, "delete")


def _contact_action(alias_id: int, contact_id: int, action: str):
    ActionForm()  # CSRF is checked by CSRFProtect before we get here
    s = db_session()
    alias = _alias_or_404(alias_id)
    try:
        row = ra.get_for_alias(s, alias.id, contact_id)
    except core.NotFound:
        flash("No such contact.", "error")
        return _back(alias_id)
    if action == "delete":
        ra.delete(s, row)
    else:
        ra.set_enabled(s, row, action == "enable")
    s.commit()
    flash(f"Contact {row.correspondent} {action}d.", "success")
    return _back(alias_id)


@bp.post("/aliases/<int:alias_id>/reply-settings")
@login_required
def reply_settings(alias_id: int):
    s = db_session()
    alias = _alias_or_404(alias_id)
    form = ReplySettingsForm(prefix="reply")
    if not form.validate_on_submit():
        return render_detail(alias, reply_form=form, status=400)
    alias.reply_name = form.reply_name.data or None
    alias.reply_mode = form.reply_mode.data or None
    s.commit()
    flash("Reply settings saved.", "success")
    return _back(alias_id)

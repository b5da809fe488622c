"""Settings: API tokens (create, shown once; revoke)."""

from __future__ import annotations

from flask import (
    Blueprint,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_wtf import FlaskForm
from wtforms import StringField, SubmitField
from wtforms.validators import DataRequired, Length

from aliasd.core import aliases as core
from aliasd.core import tokens
from aliasd.web.context import db_session
from aliasd.web.permissions import current_user, login_required

bp = Blueprint("settings", __name__, url_prefix="/settings")


class NewTokenForm(FlaskForm):
    name = StringField("Token name", validators=[DataRequired(), Length(max=100)],
                       render_kw={"placeholder": "e.g. Bitwarden on my laptop"})
    submit = SubmitField("Create token")


class RevokeForm(FlaskForm):
    submit = SubmitField("Revoke")


@bp.route("/tokens", endpoint="tokens", methods=["GET", "POST"])
@login_required
def tokens_page():
    user = current_user()
    s = db_session()
    form = NewTokenForm()
    created = None
    status = 200
    if form.validate_on_submit():
        try:
            row, created = tokens.create_token(s, user, form.name.data)
            s.commit()
            form = NewTokenForm(formdata=None)
        except core.AliasdError as exc:
            s.rollback()
            form.name.errors = [str(exc)]
            status = 422
    elif request.method == "POST":
        status = 400
    response = make_response(render_template(
        "settings/tokens.html", form=form, created=created,
        tokens=tokens.list_tokens(s, user), revoke_form=RevokeForm(),
        api_base=request.host_url.rstrip("/") + request.script_root + "/api",
    ), status)
    if created:  # the only copy of a secret: not for the browser's disk cache or proxies
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/tokens/<int:token_id>/revoke")
@login_required
def revoke(token_id: int):
    RevokeForm()
    s = db_session()
    try:
        tokens.revoke_token(s, current_user(), token_id)
        s.commit()
        flash("Token revoked.", "success")
    except core.NotFound:
        flash("No such token.", "error")
    return redirect(url_for("settings.tokens"))

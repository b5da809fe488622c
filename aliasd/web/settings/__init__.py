"""Settings: API tokens (create, shown once; revoke) and the account (display name and
mailbox, password, sign out everywhere)."""

from __future__ import annotations

from flask import (
    Blueprint,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length

from aliasd.core import accounts, tokens
from aliasd.core import aliases as core
from aliasd.core.auth import MAX_PASSWORD
from aliasd.web.admin import profile
from aliasd.web.admin.forms import ProfileForm
from aliasd.web.context import client_address, db_session, settings
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
        # Bitwarden's "Server URL" is the base without /api (it adds the path itself).
        server_url=request.host_url.rstrip("/") + request.script_root,
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


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=MAX_PASSWORD)],
                            render_kw={"autocomplete": "current-password"})
    new = PasswordField("New password",
                        validators=[DataRequired(), Length(
                            min=accounts.MIN_PASSWORD, max=MAX_PASSWORD,
                            message=f"The password must be between {accounts.MIN_PASSWORD} "
                                    f"and {MAX_PASSWORD} characters.")],
                        render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("New password again",
                            validators=[DataRequired(), EqualTo("new", "The two new passwords differ.")],
                            render_kw={"autocomplete": "new-password"})
    submit = SubmitField("Change password")


class SignOutEverywhereForm(FlaskForm):
    submit = SubmitField("Sign out everywhere")


def _account_page(form: PasswordForm, status: int = 200, profile_form=None):
    if profile_form is None:
        profile_form = ProfileForm(formdata=None, prefix="profile")
        profile.fill(profile_form, current_user())
    return render_template("settings/account.html", form=form, user=current_user(),
                           everywhere_form=SignOutEverywhereForm(),
                           profile_form=profile_form), status


@bp.post("/account/profile")
@login_required
def save_profile():
    """The user's own display name and mailbox (the same rules as the admin's user page)."""
    user = current_user()
    form = ProfileForm(prefix="profile")
    if not form.validate_on_submit():
        return _account_page(PasswordForm(formdata=None), 400, form)
    s = db_session()
    moved = profile.save(s, form, user)
    if moved is None:
        return _account_page(PasswordForm(formdata=None), 422, form)
    s.commit()
    flash(f"Profile saved{f'; {moved} alias(es) now forward to {user.mailbox}' if moved else ''}.",
          "success")
    return redirect(url_for("settings.account"))


@bp.route("/account", endpoint="account", methods=["GET", "POST"])
@login_required
def account_page():
    user = current_user()
    form = PasswordForm()
    if request.method == "GET":
        return _account_page(form)
    if not form.validate_on_submit():
        return _account_page(form, 400)
    s = db_session()
    try:
        accounts.change_password(s, settings(), user, form.current.data, form.new.data,
                                 client_address())
    except accounts.AccountError as exc:
        s.commit()  # a wrong current password counts against the rate limit
        form.current.errors = [str(exc)]
        return _account_page(form, 422)
    s.commit()
    session["epoch"] = user.session_epoch  # this browser stays signed in
    flash("Password changed. Every other session is signed out.", "success")
    return redirect(url_for("settings.account"))


@bp.post("/account/sign-out-everywhere")
@login_required
def sign_out_everywhere():
    if not SignOutEverywhereForm().validate_on_submit():
        return redirect(url_for("settings.account"))
    s = db_session()
    accounts.end_sessions(current_user())
    s.commit()
    session.clear()
    flash("Signed out everywhere: every session of yours, on any device, has ended.", "info")
    return redirect(url_for("auth.login"))

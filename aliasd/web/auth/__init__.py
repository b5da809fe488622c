"""Sign-in and sign-out."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Length

from aliasd.core.auth import SignInOutcome, authenticate, prune_attempts
from aliasd.web.context import client_address, db_session, settings
from aliasd.web.permissions import current_user, login_required, public
from aliasd.web.redirects import same_site_path

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=255)],
                           render_kw={"autocomplete": "username", "autofocus": True})
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)],
                             render_kw={"autocomplete": "current-password"})
    submit = SubmitField("Sign in")


class LogoutForm(FlaskForm):
    submit = SubmitField("Sign out")


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    if current_user() is not None:
        return redirect(url_for("aliases.index"))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        s = db_session()
        result = authenticate(s, settings(), form.username.data, form.password.data,
                              client_address())
        if result.outcome == SignInOutcome.BAD_CREDENTIALS:
            prune_attempts(s, settings())
        s.commit()
        if result.ok and result.user is not None:
            session.clear()
            session["uid"] = result.user.id
            session["epoch"] = result.user.session_epoch
            session.permanent = True
            # request.script_root keeps a reverse proxy's path prefix.
            nxt = same_site_path(request.args.get("next"))
            return redirect(request.script_root + nxt if nxt else url_for("aliases.index"))
        flash(result.message, "error")
        status = {SignInOutcome.RATE_LIMITED: 429, SignInOutcome.UNAVAILABLE: 503}.get(result.outcome, 401)
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout():
    form = LogoutForm()
    if form.validate_on_submit():
        session.clear()
        flash("You are signed out.", "info")
        return redirect(url_for("auth.login"))
    return redirect(url_for("aliases.index"))

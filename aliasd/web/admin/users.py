"""Admin: users. Adding a local user, the admin role, the profile and "sign out
everywhere" go through core.accounts (the same as ``aliasd user add|set|sign-out``)."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, session, url_for
from sqlalchemy import func, select

from aliasd.core import accounts
from aliasd.core import aliases as core
from aliasd.models import Alias, AliasState, Domain, User
from aliasd.web.admin import bp, profile
from aliasd.web.admin.forms import AdminRoleForm, NewUserForm, ProfileForm, SignOutUserForm
from aliasd.web.admin.profile import sentence
from aliasd.web.context import db_session
from aliasd.web.permissions import admin_required, current_user


def _user_or_404(user_id: int) -> User:
    user = db_session().get(User, user_id)
    if user is None:
        abort(404)
    return user


def _counts() -> dict[int, tuple[int, int]]:
    """user id → (domains owned, live aliases), in two grouped queries."""
    s = db_session()
    domains = dict(s.execute(select(Domain.owner_id, func.count()).group_by(Domain.owner_id)).all())
    live = (AliasState.ACTIVE.value, AliasState.DISABLED.value)
    aliases = dict(s.execute(select(Alias.owner_id, func.count())
                             .where(Alias.state.in_(live)).group_by(Alias.owner_id)).all())
    return {uid: (domains.get(uid, 0), aliases.get(uid, 0)) for uid in {*domains, *aliases}}


@bp.route("/users", endpoint="users", methods=["GET", "POST"])
@admin_required
def users_page():
    s = db_session()
    form = NewUserForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = accounts.create_local_user(s, form.username.data, form.mailbox.data,
                                              form.password.data, is_admin=form.is_admin.data)
            accounts.set_display_name(user, form.display_name.data)
            s.commit()
            flash(f"User {user.username} added; they can sign in now.", "success")
            return redirect(url_for("admin.user", user_id=user.id))
        except core.AliasdError as exc:
            s.rollback()
            text = str(exc)
            field = (form.mailbox if text.startswith("mailbox") else
                     form.password if "password" in text else
                     form.display_name if "display name" in text else form.username)
            field.errors = [*field.errors, sentence(exc)]
            status = 422
    elif request.method == "POST":
        status = 400
    return render_template("admin/users.html", form=form, users=accounts.list_users(s),
                           counts=_counts()), status


def _user_page(user: User, profile_form: ProfileForm, role_form: AdminRoleForm,
               status: int = 200):
    return render_template("admin/user.html", user=user, profile_form=profile_form,
                           profile_action=url_for("admin.user", user_id=user.id),
                           role_form=role_form, sign_out_form=SignOutUserForm(),
                           domains=[d for d in core.list_domains(db_session())
                                    if d.owner_id == user.id]), status


@bp.route("/users/<int:user_id>", endpoint="user", methods=["GET", "POST"])
@admin_required
def user_page(user_id: int):
    s = db_session()
    user = _user_or_404(user_id)
    profile_form = ProfileForm(prefix="profile")
    role_form = AdminRoleForm(prefix="role")
    if request.method == "GET":
        profile.fill(profile_form, user)
        role_form.is_admin.data = user.is_admin
        return _user_page(user, profile_form, role_form)
    if role_form.save_role.data:
        profile.fill(profile_form, user)
        if not role_form.validate_on_submit():
            return _user_page(user, profile_form, role_form, 400)
        try:
            accounts.set_admin(s, user, role_form.is_admin.data)
        except core.AliasdError as exc:
            s.rollback()
            user = _user_or_404(user_id)
            role_form.is_admin.errors = [sentence(exc)]
            return _user_page(user, profile_form, role_form, 422)
        s.commit()
        flash(f"{user.username} is {'now' if user.is_admin else 'no longer'} an admin.",
              "success")
        return redirect(url_for("admin.user", user_id=user.id))
    role_form.is_admin.data = user.is_admin
    if not profile_form.validate_on_submit():
        return _user_page(user, profile_form, role_form, 400)
    moved = profile.save(s, profile_form, user)
    if moved is None:
        return _user_page(_user_or_404(user_id), profile_form, role_form, 422)
    s.commit()
    flash(f"Profile of {user.username} saved"
          f"{f'; {moved} alias(es) now forward to {user.mailbox}' if moved else ''}.", "success")
    return redirect(url_for("admin.user", user_id=user.id))


@bp.post("/users/<int:user_id>/sign-out-everywhere", endpoint="sign_out_user")
@admin_required
def sign_out_user(user_id: int):
    s = db_session()
    user = _user_or_404(user_id)
    if not SignOutUserForm().validate_on_submit():
        return redirect(url_for("admin.user", user_id=user.id))
    accounts.end_sessions(user)
    s.commit()
    if user.id == current_user().id:
        session.clear()
        flash("Signed out everywhere: every session of yours has ended.", "info")
        return redirect(url_for("auth.login"))
    flash(f"Every web session of {user.username} has ended. Their API tokens still work.",
          "success")
    return redirect(url_for("admin.user", user_id=user.id))

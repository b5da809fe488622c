"""Admin forms. Field limits mirror the columns; the rules (valid domain, regex, cap,
mailbox, password length) are core's, so its message becomes the field's error."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    IntegerField,
    PasswordField,
    SelectField,
    StringField,
    SubmitField,
)
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange, Optional

from aliasd.core.accounts import MAX_DISPLAY_NAME, MIN_PASSWORD
from aliasd.core.aliases import MAX_GATE_REGEX
from aliasd.core.auth import MAX_PASSWORD
from aliasd.models import CatchAllPolicy

POLICY_CHOICES = [
    (CatchAllPolicy.REJECT.value, "Reject: only aliases created here receive mail"),
    (CatchAllPolicy.CREATE.value, "Create: first mail to a new address creates the alias"),
]
MAX_CAP = 1_000_000


class CatchAllFields:
    catch_all = SelectField("Catch-all", choices=POLICY_CHOICES,
                            default=CatchAllPolicy.REJECT.value)
    catch_all_regex = StringField("Regex gate", validators=[Optional(), Length(max=MAX_GATE_REGEX)],
                                  render_kw={"placeholder": r"e.g. [a-z0-9.-]+\.[a-z]{2,}",
                                             "spellcheck": "false", "autocomplete": "off"})
    max_per_hour = IntegerField(
        "New aliases per hour (cap)",
        validators=[Optional(), NumberRange(min=0, max=MAX_CAP,
                                            message=f"Give a whole number from 0 to {MAX_CAP}.")],
        render_kw={"inputmode": "numeric"},
    )


class NewDomainForm(FlaskForm, CatchAllFields):
    name = StringField("Domain", validators=[DataRequired(), Length(max=253)],
                       render_kw={"placeholder": "example.net", "autocomplete": "off"})
    # Choices are the users; the owner is looked up by id (an unknown id is a form error).
    owner = SelectField("Owner (catch-all aliases forward to this user's mailbox)",
                        coerce=int, choices=[])
    add = SubmitField("Add domain")


class DomainForm(FlaskForm, CatchAllFields):
    save = SubmitField("Save")


class NewUserForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=255)],
                           render_kw={"autocomplete": "off"})
    mailbox = StringField("Mailbox", validators=[DataRequired(), Length(max=320)],
                          render_kw={"placeholder": "name@provider.example", "type": "email"})
    display_name = StringField("Display name", validators=[Optional(), Length(max=MAX_DISPLAY_NAME)])
    password = PasswordField(
        "Password", validators=[DataRequired(), Length(
            min=MIN_PASSWORD, max=MAX_PASSWORD,
            message=f"The password must be between {MIN_PASSWORD} and {MAX_PASSWORD} characters.")],
        render_kw={"autocomplete": "new-password"},
    )
    confirm = PasswordField("Password again",
                            validators=[DataRequired(), EqualTo("password", "The two passwords differ.")],
                            render_kw={"autocomplete": "new-password"})
    is_admin = BooleanField("Admin (manages domains, users and every alias)")
    add = SubmitField("Add user")


class ProfileForm(FlaskForm):
    """A user's own settings, and an admin's edit of anyone's."""

    display_name = StringField("Display name", validators=[Optional(), Length(max=MAX_DISPLAY_NAME)],
                               render_kw={"autocomplete": "name"})
    # Optional here: a directory (LDAP) user's mailbox is shown but not sent; core says
    # what is wrong with an empty or malformed one.
    mailbox = StringField("Mailbox", validators=[Optional(), Length(max=320)],
                          render_kw={"autocomplete": "email", "type": "email"})
    save = SubmitField("Save profile")


class AdminRoleForm(FlaskForm):
    is_admin = BooleanField("Admin (manages domains, users and every alias)")
    save_role = SubmitField("Save role")


class SignOutUserForm(FlaskForm):
    submit = SubmitField("Sign out everywhere")

"""Admin pages: managed domains (catch-all policy, regex gate, hourly cap) and users
(add a local user, admin role, profile, sign out everywhere). Every rule is core's, the
same functions ``aliasd domain`` and ``aliasd user`` call; these views only map forms to
them and core's errors to form errors."""

from __future__ import annotations

from flask import Blueprint

from aliasd.web.permissions import nav_item

bp = Blueprint("admin", __name__, url_prefix="/admin")
nav_item(bp, "Domains", "admin.domains", admin=True)
nav_item(bp, "Users", "admin.users", admin=True)

from aliasd.web.admin import domains, users  # noqa: E402,F401 - the views register on bp

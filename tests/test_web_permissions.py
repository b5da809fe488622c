"""Every endpoint declares its permission; undeclared views are refused."""

from __future__ import annotations

from flask import Blueprint

from aliasd.config import load_settings
from aliasd.web import create_app
from aliasd.web.permissions import PERMISSIONS, permission_of


def _app():
    settings = load_settings(environ={}, env="development", secret_key="t" * 20,
                             database_url="sqlite://", session_cookie_secure=False)
    return create_app(settings)


def test_every_endpoint_declares_a_permission():
    app = _app()
    missing = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if permission_of(view) not in PERMISSIONS:
            missing.append(f"{rule.rule} -> {rule.endpoint}")
    assert not missing, f"endpoints without a declared permission: {missing}"
    # The walk covers the real app, not an empty one.
    endpoints = {r.endpoint for r in app.url_map.iter_rules()}
    assert {"auth.login", "aliases.index", "api.simplelogin_random_new"} <= endpoints


def test_api_endpoints_are_token_only_and_pages_need_sign_in():
    app = _app()
    for rule in app.url_map.iter_rules():
        perm = permission_of(app.view_functions[rule.endpoint])
        if rule.rule.startswith("/api/"):
            assert perm == "token", rule.rule
        elif rule.endpoint not in ("auth.login", "static", "favicon", "metrics.scrape",
                                   "quarantine.oneclick_page", "quarantine.oneclick_do"):
            assert perm in ("login", "admin"), rule.rule


def test_a_view_without_declaration_is_refused_at_request_time():
    app = _app()
    bp = Blueprint("forgot", __name__)

    @bp.get("/forgot")
    def forgot():  # no permission decorator on purpose
        return "secret"

    app.register_blueprint(bp)
    response = app.test_client().get("/forgot")
    assert response.status_code == 403
    assert b"secret" not in response.data


# Endpoints whose permission is part of their specification: a change here is a change
# of who may do what, never a side effect.
DECLARED = {
    "admin.domains": "admin",
    "admin.domain": "admin",
    "admin.users": "admin",
    "admin.user": "admin",
    "admin.sign_out_user": "admin",
    # every block rule refuses mail for every user
    "blocklist.toggle": "admin",
    "settings.account": "login",
    "settings.save_profile": "login",
    "settings.sign_out_everywhere": "login",
    "settings.tokens": "login",
    # held messages and learning: each user their own (admins all), checked in the view
    "quarantine.index": "login",
    "quarantine.show": "login",
    "quarantine.decide": "login",
    "quarantine.learn": "login",
    "quarantine.threshold": "login",
    # one-click links from forwarded mail: the signed token is the permission
    "quarantine.oneclick_page": "public",
    "quarantine.oneclick_do": "public",
}


def test_admin_and_settings_endpoints_declare_the_expected_permission():
    app = _app()
    declared = {rule.endpoint: permission_of(app.view_functions[rule.endpoint])
                for rule in app.url_map.iter_rules()}
    assert {name: declared.get(name) for name in DECLARED} == DECLARED
    # Every page under /admin/ is for admins only, including any added later.
    admin_rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/admin/")]
    assert admin_rules
    for rule in admin_rules:
        assert declared[rule.endpoint] == "admin", rule.rule

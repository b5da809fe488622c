"""Flask application factory (fleshed out by the web blueprints)."""

from __future__ import annotations

from flask import Flask

from aliasd.config import Settings, load_settings


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    app = Flask(__name__, template_folder="../../templates")
    app.config["ALIASD_SETTINGS"] = settings
    app.config["SECRET_KEY"] = settings.secret_key
    return app

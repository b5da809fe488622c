"""Helpers for web tests: an app on the test database, users with passwords, a client
that signs in and reads CSRF tokens from the pages it gets, and a real HTTP server."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from werkzeug.serving import make_server

from aliasd.config import Settings
from aliasd.core import aliases as core
from aliasd.core.passwords import hash_password
from aliasd.db import Database
from aliasd.web import create_app
from tests.harness.net import free_port

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def make_app(settings: Settings, **overrides) -> Flask:
    settings = settings.with_overrides(session_cookie_secure=False, **overrides)
    app = create_app(settings)
    app.config["TESTING"] = True
    return app


_HASHES: dict[str, str] = {}


def _hash(password: str) -> str:
    # argon2 is slow on purpose; hash each test password once per process.
    if password not in _HASHES:
        _HASHES[password] = hash_password(password)
    return _HASHES[password]


def add_user(db: Database, name: str, *, admin: bool = False, domain: str | None = None,
             password: str = PASSWORD) -> int:
    with db.session() as s:
        user = core.create_user(s, name, f"{name}@mailbox.example", is_admin=admin,
                                password_hash=_hash(password))
        if domain:
            core.create_domain(s, domain, user)
        return user.id


def csrf_from(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token in page"
    return match.group(1)


def login(client, name: str, password: str = PASSWORD, prefix: str = ""):
    page = client.get(prefix + "/login")
    token = csrf_from(page.get_data(as_text=True))
    return client.post(prefix + "/login",
                       data={"username": name, "password": password, "csrf_token": token})


def signed_in(app: Flask, name: str, password: str = PASSWORD):
    """A test client of ``app`` signed in as ``name``."""
    client = app.test_client()
    response = login(client, name, password)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def page_token(client, path: str = "/") -> str:
    return csrf_from(client.get(path).get_data(as_text=True))


@contextmanager
def serve(app: Flask) -> Iterator[str]:
    """The app on a real HTTP server on 127.0.0.1 in a thread; yields its base URL."""
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)

"""Sign-in does the same password-hash work whether or not the name exists, so response
time does not tell which accounts exist (both engines, no LDAP configured)."""

from __future__ import annotations

import pytest

from aliasd.core import aliases as core
from aliasd.core import auth
from tests.harness.webapp import add_user


@pytest.fixture
def hashed(monkeypatch):
    calls: list[str] = []
    real = auth.verify_password

    def counting(stored, password):
        calls.append(password)
        return real(stored, password)

    monkeypatch.setattr(auth, "verify_password", counting)
    return calls


def test_every_refused_name_costs_one_hash(database, settings, hashed):
    add_user(database, "alice")
    with database.session() as s:
        # a directory user from when LDAP was configured; LDAP is off now
        core.create_user(s, "carol", "carol@mailbox.example", auth_source="ldap")
    for name in ("alice", "nobody", "carol"):
        hashed.clear()
        with database.session() as s:
            result = auth.authenticate(s, settings, name, "wrong password", "192.0.2.1")
        assert result.outcome == auth.SignInOutcome.BAD_CREDENTIALS, name
        assert len(hashed) == 1, name

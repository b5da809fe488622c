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


def test_a_local_account_without_a_password_costs_one_hash_too(database, settings, monkeypatch):
    """``aliasd user add`` without --password-stdin makes an account with no password yet:
    refusing it must take as long as refusing anyone, and no password opens it."""
    from aliasd.core import passwords

    add_user(database, "alice")
    with database.session() as s:
        core.create_user(s, "dave", "dave@mailbox.example")  # no password yet
    work: list[str] = []

    class CountingHasher:
        def verify(self, stored, password):
            work.append(password)
            return real.verify(stored, password)

    real = passwords._hasher
    monkeypatch.setattr(passwords, "_hasher", CountingHasher())
    for name in ("alice", "dave"):
        work.clear()
        with database.session() as s:
            result = auth.authenticate(s, settings, name, "wrong password", "192.0.2.1")
        assert result.outcome == auth.SignInOutcome.BAD_CREDENTIALS, name
        assert len(work) == 1, name
    with database.session() as s:  # not even the dummy hash's own password
        result = auth.authenticate(s, settings, "dave", "not a real password", "192.0.2.2")
    assert result.outcome == auth.SignInOutcome.BAD_CREDENTIALS

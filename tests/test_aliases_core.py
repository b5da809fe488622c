"""Alias lifecycle and catch-all rules, on SQLite and PostgreSQL (``database`` fixture)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from aliasd.core import aliases as core
from aliasd.doctor import catch_all_gate_checks
from aliasd.models import Alias, AliasChange, AliasOrigin, AliasState, utcnow


@pytest.fixture
def setup(database):
    """A user and two domains: one with catch-all create, one reject."""
    with database.session() as s:
        bob = core.create_user(s, "bob", "Bob@Real.Example")
        core.create_domain(s, "Example.NET", bob, catch_all="create")
        core.create_domain(s, "strict.example", bob, catch_all="reject")
    return database


def _changes(session) -> list[str | None]:
    return list(session.scalars(select(AliasChange.address).order_by(AliasChange.seq)))


def test_create_alias_normalises_and_defaults_to_owner_mailbox(setup):
    with setup.session() as s:
        bob = core.get_user(s, "bob")
        alias = core.create_alias(s, "GitHub.com@EXAMPLE.net", bob, site="https://www.github.com/")
        assert alias.address == "github.com@example.net"
        assert alias.site == "github.com"
        assert alias.destination_list == ["bob@real.example"]
        assert alias.state == AliasState.ACTIVE
    with setup.session() as s:
        # Any case finds it; the change feed names it for lookupd.
        assert core.get_alias(s, "GITHUB.COM@example.NET").id == alias.id
        assert "github.com@example.net" in _changes(s)


def test_extension_finds_the_base_alias(setup):
    with setup.session() as s:
        core.create_alias(s, "github.com@example.net", core.get_user(s, "bob"))
    with setup.session() as s:
        found = core.get_alias(s, "GitHub.com+News@example.net", delimiter="+")
        assert found.address == "github.com@example.net"
        with pytest.raises(core.NotFound):
            core.get_alias(s, "github.com+news@example.net")  # no delimiter: a different key


def test_create_alias_errors(setup):
    with setup.session() as s:
        bob = core.get_user(s, "bob")
        core.create_alias(s, "shop@example.net", bob, destinations=["a@x.example, b@x.example"])
    with setup.session() as s:
        bob = core.get_user(s, "bob")
        with pytest.raises(core.AlreadyExists, match="already exists"):
            core.create_alias(s, "SHOP@example.net", bob)
        with pytest.raises(core.NotFound, match="not a domain aliasd manages"):
            core.create_alias(s, "a@unmanaged.example", bob)
        with pytest.raises(core.AliasdError, match="must not contain a comma"):
            core.create_alias(s, "a,b@example.net", bob)
        with pytest.raises(core.AliasdError, match="must not contain a space"):
            core.create_alias(s, "x@example.net", bob, destinations=["bad dest@x.example"])
        with pytest.raises(core.AliasdError, match="web address or host name"):
            core.create_alias(s, "y@example.net", bob, site="not a site")
    with setup.session() as s:
        alias = core.get_alias(s, "shop@example.net")
        assert alias.destination_list == ["a@x.example", "b@x.example"]
        assert s.scalar(select(func.count()).select_from(Alias)) == 1


def test_disabled_can_be_re_enabled_burned_cannot(setup):
    with setup.session() as s:
        core.create_alias(s, "a@example.net", core.get_user(s, "bob"))
    with setup.session() as s:
        alias = core.get_alias(s, "a@example.net")
        core.set_state(s, alias, AliasState.DISABLED)
    with setup.session() as s:
        alias = core.get_alias(s, "a@example.net")
        assert alias.state == AliasState.DISABLED
        core.set_state(s, alias, AliasState.ACTIVE)
        core.set_state(s, alias, AliasState.BURNED)
    with setup.session() as s:
        alias = core.get_alias(s, "a@example.net")
        for target in (AliasState.ACTIVE, AliasState.DISABLED):
            with pytest.raises(core.InvalidTransition, match="burned; it cannot become"):
                core.set_state(s, alias, target)
        assert core.get_alias(s, "a@example.net").state == AliasState.BURNED
        with pytest.raises(core.AddressRetired, match="never handed out again"):
            core.create_alias(s, "a@example.net", core.get_user(s, "bob"))


def test_catch_all_creates_with_site_and_owner_mailbox(setup):
    with setup.session() as s:
        domain = core.get_domain(s, "example.net")
        alias = core.catch_all_create(s, domain, "github.com")
        assert alias is not None
        assert (alias.address, alias.site, alias.origin) == (
            "github.com@example.net", "github.com", AliasOrigin.CATCH_ALL
        )
        assert alias.destination_list == ["bob@real.example"]
        # Not host-like: no site recorded.
        assert core.catch_all_create(s, domain, "newsletter").site is None
        # A second mail finds the same alias rather than failing.
        assert core.catch_all_create(s, domain, "github.com").id == alias.id
        # Reject policy never creates.
        assert core.catch_all_create(s, core.get_domain(s, "strict.example"), "x") is None
    with setup.session() as s:
        assert s.scalar(select(func.count()).select_from(Alias)) == 2


def test_catch_all_regex_gate(setup):
    with setup.session() as s:
        domain = core.get_domain(s, "example.net")
        core.update_domain(s, domain, catch_all_regex=r"[a-z0-9.-]+\.[a-z]+")
        assert core.catch_all_create(s, domain, "random123") is None
        assert core.catch_all_create(s, domain, "shop.example") is not None
        with pytest.raises(core.AliasdError, match="regex"):
            core.update_domain(s, domain, catch_all_regex="(unclosed")
        with pytest.raises(core.AliasdError, match="back-references, look-arounds"):
            core.update_domain(s, domain, catch_all_regex=r"(\w)\1.*")


def test_a_stored_gate_only_pythons_engine_runs_still_gates_and_doctor_names_it(setup):
    """Gates stored before they had to run on RE2 keep their meaning."""
    with setup.session() as s:
        domain = core.get_domain(s, "example.net")
        domain.catch_all_regex = r"(?!www\.)[a-z.]+"  # a look-ahead: refused when set today
        assert core.catch_all_create(s, domain, "www.shop") is None
        assert core.catch_all_create(s, domain, "shop.example") is not None
        s.commit()
    # aliasd doctor names it, with the fix
    (check,) = catch_all_gate_checks(setup)
    assert check.status == "warn" and "example.net catch-all gate" in check.line()
    assert "back-references, look-arounds" in check.line()
    assert "aliasd domain set example.net --catch-all-regex" in check.line()
    with setup.session() as s:
        core.update_domain(s, core.get_domain(s, "example.net"), catch_all_regex=r"[a-z.]+")
        s.commit()
    assert [c.status for c in catch_all_gate_checks(setup)] == ["ok"]


def test_catch_all_hourly_cap_defers(setup):
    now = utcnow()
    with setup.session() as s:
        domain = core.get_domain(s, "example.net")
        core.update_domain(s, domain, catch_all_max_per_hour=2)
        assert core.catch_all_create(s, domain, "one", now=now)
        assert core.catch_all_create(s, domain, "two", now=now)
        with pytest.raises(core.CatchAllDeferred, match="cap of 2"):
            core.catch_all_create(s, domain, "three", now=now)
        # Existing aliases still resolve past the cap; aliases added by hand don't count.
        assert core.catch_all_create(s, domain, "one", now=now) is not None
        core.create_alias(s, "manual@example.net", core.get_user(s, "bob"))
    with setup.session() as s:
        # An hour later the window has moved on.
        domain = core.get_domain(s, "example.net")
        later = now + dt.timedelta(hours=1, seconds=1)
        assert core.catch_all_create(s, domain, "three", now=later) is not None
        with pytest.raises(core.CatchAllDeferred):
            core.catch_all_create(s, domain, "four", now=now)


def test_burned_and_deleted_are_never_recreated_by_catch_all(setup):
    with setup.session() as s:
        domain = core.get_domain(s, "example.net")
        core.set_state(s, core.catch_all_create(s, domain, "burned.example"), AliasState.BURNED)
        core.set_state(s, core.catch_all_create(s, domain, "gone.example"), AliasState.DELETED)
        core.set_state(s, core.catch_all_create(s, domain, "off.example"), AliasState.DISABLED)
    with setup.session() as s:
        domain = core.get_domain(s, "example.net")
        for local in ("burned.example", "gone.example", "off.example"):
            assert core.catch_all_create(s, domain, local) is None
        states = {a: st for a, st in s.execute(select(Alias.address, Alias.state))}
        assert states == {
            "burned.example@example.net": "burned",
            "gone.example@example.net": "deleted",
            "off.example@example.net": "disabled",
        }


def test_forget_releases_the_address(setup):
    with setup.session() as s:
        bob = core.get_user(s, "bob")
        alias = core.create_alias(s, "old@example.net", bob)
        core.set_state(s, alias, AliasState.BURNED)
    with setup.session() as s:
        core.forget(s, core.get_alias(s, "old@example.net"))
    with setup.session() as s:
        with pytest.raises(core.NotFound):
            core.get_alias(s, "old@example.net")
        again = core.catch_all_create(s, core.get_domain(s, "example.net"), "old")
        assert again is not None and again.state == AliasState.ACTIVE
        assert _changes(s).count("old@example.net") >= 3  # create, burn, forget (+ re-create)


def test_users_and_domains_rules(setup):
    with setup.session() as s, pytest.raises(core.AlreadyExists, match="user 'bob' already exists"):
        core.create_user(s, "bob", "b@real.example")
    with setup.session() as s, pytest.raises(core.AlreadyExists, match="already managed"):
        core.create_domain(s, "EXAMPLE.net.", core.get_user(s, "bob"))
    with setup.session() as s:
        with pytest.raises(core.AliasdError, match="1 to 255 characters"):
            core.create_user(s, "", "b@real.example")
        with pytest.raises(core.NotFound, match="no user named 'nobody'"):
            core.get_user(s, "nobody")
        idn = core.create_domain(s, "Bücher.example", core.get_user(s, "bob"))
        assert idn.name == "xn--bcher-kva.example"
        assert core.get_domain(s, "bücher.EXAMPLE").id == idn.id
        assert _changes(s)[-1] is None  # domain changes ask lookupd to reload everything


def test_user_names_people_have_are_accepted_and_lookalikes_refused():
    for name in ("o'brien", "jörg", "star*(x)", "alice@corp.example", "=1+1", "张伟"):
        assert core.check_username(f"  {name} ") == name
    for name in ("a b", "\u202egnp.exe", "zero\u200bwidth", "<b>", "../x", "back\\slash", ""):
        with pytest.raises(core.AliasdError):
            core.check_username(name)


def test_no_alias_takes_an_address_kept_for_srs_or_reverse_aliases(setup):
    """ra-... is a reverse alias and srs0=/srs1= an SRS address on every domain: an alias
    there would shadow it, by hand or by the catch-all's first mail alike."""
    with setup.session() as s:
        bob = core.get_user(s, "bob")
        domain = core.get_domain(s, "example.net")
        for local in ("ra-0123456789abcdef", "RA-shop", "srs0=hash=tt=bank.example=x",
                      "SRS1=x=y"):
            with pytest.raises(core.AliasdError, match="kept for SRS and reverse aliases"):
                core.create_alias(s, f"{local}@example.net", bob)
            assert core.catch_all_create(s, domain, local.lower()) is None
        assert core.create_alias(s, "rally@example.net", bob).address == "rally@example.net"

"""The srs_forward / srs_reverse maps: called directly on both database engines, then
queried by Postfix's own postmap through a running ``aliasd lookupd``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
from sqlalchemy import select

from aliasd.config import SettingsError, load_settings
from aliasd.core import aliases as core
from aliasd.core.decision import LookupOutcome
from aliasd.db import Database
from aliasd.lookup import srs_maps
from aliasd.lookup.registry import build_maps
from aliasd.models import User
from tests.harness.cli import settings_env
from tests.harness.net import free_port, wait_for_port
from tests.harness.postfix import postmap_query

SRS_ENV = {
    "ALIASD_SRS_DOMAIN": "fwd.example.net",
    "ALIASD_SRS_SECRETS": "current-secret,previous-secret",
    "ALIASD_SRS_HASH_LENGTH": "6",
    "ALIASD_SRS_EXCLUDE_DOMAINS": "partner.example",
}


@pytest.fixture
def srs_settings(settings):
    return settings.with_overrides(
        srs_domain="fwd.example.net",
        srs_secrets=["current-secret", "previous-secret"],
        srs_hash_length=6,
        srs_exclude_domains=["partner.example"],
    )


def add_domain(database: Database, name: str) -> None:
    with database.session() as session:
        owner = session.scalar(select(User).where(User.username == "owner"))
        if owner is None:
            owner = core.create_user(session, "owner", "owner@real.example")
        core.create_domain(session, name, owner)


def test_maps_are_registered_unless_srs_is_switched_off(settings, srs_settings, database):
    off = settings.with_overrides(srs_enabled=False)
    assert not {"srs_forward", "srs_reverse"} & set(build_maps(off, database))
    assert {"srs_forward", "srs_reverse"} <= set(build_maps(settings, database))
    maps = build_maps(srs_settings, database)
    assert isinstance(maps["srs_forward"], srs_maps.SrsForwardMap)
    assert isinstance(maps["srs_reverse"], srs_maps.SrsReverseMap)


def test_bad_srs_settings_are_refused_clearly():
    with pytest.raises(SettingsError, match="srs_hash_length"):
        load_settings(environ={**SRS_ENV, "ALIASD_SRS_HASH_LENGTH": "1"})
    with pytest.raises(SettingsError, match="srs_domain"):
        load_settings(environ={**SRS_ENV, "ALIASD_SRS_DOMAIN": "no spaces.example"})


def test_forward_and_reverse_maps_directly(srs_settings, database):
    add_domain(database, "example.net")
    forward = srs_maps.build_forward(srs_settings, database)
    reverse = srs_maps.build_reverse(srs_settings, database)

    async def scenario():
        # Before the managed domains are known, a foreign sender cannot be decided.
        assert (await forward.lookup("alice@bank.example")).outcome is LookupOutcome.TEMP
        # ... but senders that settings alone exclude are answered at once.
        assert (await forward.lookup("x@fwd.example.net")).outcome is LookupOutcome.NOTFOUND
        assert (await forward.lookup("x@partner.example")).outcome is LookupOutcome.NOTFOUND
        await forward.refresh()
        found = await forward.lookup("alice@bank.example")
        assert found.outcome is LookupOutcome.FOUND
        assert found.value.startswith("SRS0=") and found.value.endswith(
            "=bank.example=alice@fwd.example.net"
        )
        assert (await forward.lookup("github.com@example.net")).outcome is LookupOutcome.NOTFOUND
        assert (await forward.lookup("not an address")).outcome is LookupOutcome.NOTFOUND
        back = await reverse.lookup(found.value)
        assert back.outcome is LookupOutcome.FOUND and back.value == "alice@bank.example"
        assert (await reverse.lookup(found.value.upper())).value.lower() == "alice@bank.example"
        tampered = found.value.replace("=alice@", "=mallory@")
        assert (await reverse.lookup(tampered)).outcome is LookupOutcome.NOTFOUND
        assert (await reverse.lookup("github.com@example.net")).outcome is LookupOutcome.NOTFOUND
        # A domain added later is picked up by the background refresh.
        add_domain(database, "second.example")
        assert (await forward.lookup("x@second.example")).outcome is LookupOutcome.FOUND
        await forward.start()
        try:
            for _ in range(200):
                if (await forward.lookup("x@second.example")).outcome is LookupOutcome.NOTFOUND:
                    break
                await asyncio.sleep(0.02)
            assert (await forward.lookup("x@second.example")).outcome is LookupOutcome.NOTFOUND
        finally:
            await forward.close()

    asyncio.run(scenario())


def test_forward_map_answers_temp_when_the_database_is_down(srs_settings, database):
    add_domain(database, "example.net")
    now = [100.0]
    domains = srs_maps.ManagedDomains(database, max_staleness=5.0, clock=lambda: now[0])
    forward = srs_maps.SrsForwardMap(srs_maps.SrsRewriter(
        srs_maps.SrsConfig.from_settings(srs_settings)), domains)  # fmt: skip
    domains.refresh()
    assert forward.lookup_fast("alice@bank.example").outcome is LookupOutcome.FOUND
    # The database goes away: refreshes fail, the old list serves until it is too old.
    domains.database = Database("postgresql+psycopg://nobody@127.0.0.1:1/none", timeout=1)
    with pytest.raises(Exception):  # noqa: B017 - any driver error
        domains.refresh()
    now[0] += 4
    assert forward.lookup_fast("alice@bank.example").outcome is LookupOutcome.FOUND
    now[0] += 2
    decision = forward.lookup_fast("alice@bank.example")
    assert decision.outcome is LookupOutcome.TEMP, decision
    # The reverse map needs no database at all.
    reverse = srs_maps.build_reverse(srs_settings, domains.database)
    srs = srs_maps.SrsRewriter(srs_maps.SrsConfig.from_settings(srs_settings)).forward(
        "alice@bank.example"
    )
    assert reverse.lookup_fast(srs).value == "alice@bank.example"


def test_srs_domain_on_a_catch_all_domain_stays_closed(settings, database):
    """With srs_domain = a managed catch-all domain, a refused SRS address must not be
    minted as a new alias by the virtual map (that would accept forged bounces)."""
    with database.session() as session:
        owner = core.create_user(session, "owner", "owner@real.example")
        core.create_domain(session, "example.net", owner, catch_all="create")
    srs_on = settings.with_overrides(srs_domain="example.net", srs_secrets=["s"])
    maps = build_maps(srs_on, database)
    maps["virtual"].replica.sync()
    maps["srs_forward"].domains.refresh()
    rewriter = maps["srs_reverse"].rewriter
    valid = rewriter.forward("alice@bank.example")
    tampered = valid.replace("=alice@", "=mallory@")
    assert maps["srs_reverse"].lookup_fast(valid).value == "alice@bank.example"
    assert maps["srs_reverse"].lookup_fast(tampered).outcome is LookupOutcome.NOTFOUND
    for address in (tampered, tampered.upper()):
        assert asyncio.run(maps["virtual"].lookup(address)).outcome is LookupOutcome.NOTFOUND
    # Ordinary new addresses on the domain are still created by the catch-all...
    assert asyncio.run(maps["virtual"].lookup("shop.example@example.net")).outcome is LookupOutcome.FOUND
    # ... and the domain's own senders are not rewritten.
    assert maps["srs_forward"].lookup_fast("shop.example@example.net").outcome is LookupOutcome.NOTFOUND


@pytest.fixture
def lookupd(settings, srs_settings, database):
    """A real ``aliasd lookupd`` with SRS on, serving socketmap on a free port."""
    add_domain(database, "example.net")
    port = free_port()
    env = settings_env(settings) | SRS_ENV
    proc = subprocess.Popen(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{port}",
         "--tcp", ""],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=20)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_postmap_queries_through_lookupd(lookupd):
    forward = f"socketmap:inet:127.0.0.1:{lookupd}:srs_forward"
    reverse = f"socketmap:inet:127.0.0.1:{lookupd}:srs_reverse"
    # The managed domains load in the background right after start-up.
    for _ in range(100):
        status, srs, err = postmap_query("alice@bank.example", forward)
        if status != 2 and "temporary" not in err.lower():
            break
        time.sleep(0.05)
    assert status == 0, (status, srs, err)
    assert srs.startswith("SRS0=") and srs.endswith("=bank.example=alice@fwd.example.net")
    assert postmap_query(srs, reverse)[:2] == (0, "alice@bank.example")
    assert postmap_query(srs.lower(), reverse)[:2] == (0, "alice@bank.example")
    # Local, excluded and already-rewritten senders stay as they are.
    for key in ("github.com@example.net", "bob@partner.example", srs):
        assert postmap_query(key, forward)[0] == 1, key
    # Forged and altered bounce addresses are not reversed; ordinary recipients pass.
    for key in (srs.replace("=alice@", "=mallory@"),
                "SRS0=AAAAAA=AB=bank.example=alice@fwd.example.net",
                "github.com@example.net"):  # fmt: skip
        assert postmap_query(key, reverse)[0] == 1, key


def test_postfix_config_prints_the_srs_lines(tmp_path):
    # postfix-config needs no database: run it once with SRS on and once with it off.
    def run(extra: dict[str, str]) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALIASD_")}
        env |= {"ALIASD_DATA_DIR": str(tmp_path), "ALIASD_LOOKUP_SOCKETMAP": "127.0.0.1:7777"}
        proc = subprocess.run([sys.executable, "-m", "aliasd", "postfix-config"],
                              env=env | extra, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    lines = run(SRS_ENV).splitlines()
    table = "socketmap:inet:127.0.0.1:7777"
    for line in (
        f"sender_canonical_maps = {table}:srs_forward",
        "sender_canonical_classes = envelope_sender",
        f"recipient_canonical_maps = {table}:srs_reverse",
        "recipient_canonical_classes = envelope_recipient, header_recipient",
        f"virtual_alias_domains = {table}:virtual, fwd.example.net",
    ):
        assert line in lines, (line, lines)
    # by default (no SRS settings) the canonical maps are printed too, without a domain
    plain = run({})
    assert f"sender_canonical_maps = {table}:srs_forward" in plain.splitlines()
    assert "fwd.example.net" not in plain
    assert "canonical" not in run({"ALIASD_SRS_ENABLED": "false"})


def test_lookupd_refuses_bad_srs_settings_without_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIASD_")}
    env |= SRS_ENV | {"ALIASD_DATA_DIR": str(tmp_path), "ALIASD_SRS_HASH_LENGTH": "2"}
    proc = subprocess.run(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{free_port()}"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "srs_hash_length must be between 4 and 27" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_srs_settings_the_first_managed_domain_signs_with_a_generated_secret(
    settings, database
):
    import asyncio
    import os
    import stat

    add_domain(database, "first.example")
    add_domain(database, "second.example")
    forward = srs_maps.build_forward(settings, database)
    reverse = srs_maps.build_reverse(settings, database)
    secret_file = os.path.join(settings.data_dir, "srs_secrets")
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    asyncio.run(forward.refresh())
    decision = forward.lookup_fast("news@shop.example")
    assert decision.value.startswith("SRS0=") and decision.value.endswith("@first.example")
    assert forward.lookup_fast("me@second.example").value == ""  # our own: kept
    assert reverse.lookup_fast(decision.value).value == "news@shop.example"
    # the same hash verifies at any of our domains; a forged one does not
    other = decision.value.replace("@first.example", "@second.example")
    assert reverse.lookup_fast(other).value == "news@shop.example"
    forged = decision.value.replace("=news@", "=mallory@")
    assert reverse.lookup_fast(forged).value == ""
    assert reverse.lookup_fast("plain@first.example").value == ""

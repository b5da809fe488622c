"""Sender blocks through a real Postfix: ``header_checks = pcre:<aliasd's file>`` and
``check_sender_access`` on aliasd's ``sender_access`` socketmap (lookupd), with the real
``aliasd milter`` recording spam. Spam from one source reaches the auto-block threshold,
aliasd writes and reloads the table, and the next message is refused with the rule's text;
a broken rule never reaches the live file; an imported real-world list works in Postfix.
One Postfix, milter and lookupd per engine (SQLite, PostgreSQL)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.models import BlockRule, MailEvent
from aliasd.postfix import header_checks as hc
from aliasd.postfix import publisher
from aliasd.postfix.config_lines import blocklist_section, postfix_table
from aliasd.postfix.milter_lines import postfix_milter_settings
from tests.harness.cli import settings_env
from tests.harness.databases import open_clean_database
from tests.harness.net import free_port, wait_for_milter, wait_for_port
from tests.harness.postfix import CaptureServer, PostfixInstance, postmap_query, swaks
from tests.harness.processes import start_logged, stop_process

pytestmark = pytest.mark.postfix

# A real list from a live server (copied from shared/fixtures), defects included.
FIXTURE = Path(__file__).parent / "data" / "header_checks.v3"


class World:
    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "aliasd", *args],
            env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"aliasd {args} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def rules(self) -> list[BlockRule]:
        with self.db.session() as s:
            return list(s.scalars(select(BlockRule).order_by(BlockRule.id)))

    def send_spam(self, sender: str, from_addr: str, marker: str) -> subprocess.CompletedProcess:
        # The bundled scanner's "spammy" recipe (see test_milter_postfix): scored as spam.
        return swaks(
            self.postfix.smtp_port,
            to="shop.example@example.net",
            sender=sender,
            header={
                "From": from_addr,
                "To": "undisclosed-recipients:;",
                "Subject": f"BUY CHEAP WATCHES TODAY ONLY {marker}",
                "Content-Type": "text/html",
            },
            body='<html><a href="http://192.0.2.9/buy">buy</a></html>',
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"blocklist-{request.param}")
    db = open_clean_database(request.param, base, request)
    with db.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "shop.example@example.net", alice, site="shop.example")

    # Postfix runs as user postfix and must read the table: keep it all under /tmp.
    pf_dir = Path(tempfile.mkdtemp(prefix="aliasd-hc-pf-", dir="/tmp"))
    os.chmod(pf_dir, 0o755)
    pf_config = pf_dir / "pf" / "etc"
    lookup_port = free_port()
    settings = load_settings(
        environ={},
        data_dir=str(base / "data"),
        database_url=db.url,
        env="development",
        secret_key="test",
        milter_listen=f"127.0.0.1:{free_port()}",
        lookup_socketmap=f"127.0.0.1:{lookup_port}",
        blocklist_file=str(pf_dir / "header_checks"),
        blocklist_reload_command=f"postfix -c {pf_config} reload",
        autoblock_threshold=3,
        lookup_sync_interval=0.1,
    )
    env = settings_env(settings)
    env.update(
        ALIASD_MILTER_LISTEN=settings.milter_listen,
        ALIASD_LOOKUP_SOCKETMAP=settings.lookup_socketmap,
        ALIASD_LOOKUP_SYNC_INTERVAL="0.1",
        ALIASD_BLOCKLIST_FILE=settings.blocklist_file,
        ALIASD_BLOCKLIST_RELOAD_COMMAND=settings.blocklist_reload_command,
        ALIASD_AUTOBLOCK_THRESHOLD="3",
    )
    # The table must exist before Postfix starts (an empty one: no rules yet).
    first = publisher.publish(settings.with_overrides(blocklist_reload_command=""), db)
    assert first.changed and first.rules == 0
    # Everything started is stopped again, also when the set-up itself fails.
    with contextlib.ExitStack() as stack:
        stack.callback(db.dispose)
        stack.callback(shutil.rmtree, pf_dir, ignore_errors=True)
        milter = start_logged([sys.executable, "-m", "aliasd", "milter"], env, base / "milter.log")
        stack.callback(stop_process, milter)
        lookupd = start_logged(
            [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", settings.lookup_socketmap,
             "--tcp", ""], env, base / "lookupd.log",
        )  # fmt: skip
        stack.callback(stop_process, lookupd)
        wait_for_milter(settings.milter_listen)
        wait_for_port(lookup_port)
        virtual = postfix_table("socketmap", settings.lookup_socketmap, "virtual")
        capture = stack.enter_context(CaptureServer())
        main_cf = {
            "virtual_alias_domains": virtual,
            "virtual_alias_maps": virtual,
            **postfix_milter_settings(settings),
        }
        # Exactly the lines `aliasd postfix-config` prints for the blocklist.
        for line in blocklist_section(settings).lines:
            key, _, value = line.partition(" = ")
            main_cf[key] = value
        postfix = PostfixInstance(pf_dir / "pf", relay_port=capture.port, main_cf=main_cf)
        assert postfix.config_dir == pf_config
        stack.callback(postfix.stop)
        postfix.start()
        w = World(db=db, settings=settings, postfix=postfix, capture=capture, env=env,
                  base=base, access=postfix_table("socketmap", settings.lookup_socketmap,
                                                   "sender_access"))  # fmt: skip
        # lookupd answers TEMP until its copies are loaded: wait for both maps.
        wait_for(lambda: postmap_query("example.net", virtual)[0] == 0, what="virtual map")
        wait_for(lambda: postmap_query("a@ok.example", w.access)[0] == 1, what="sender_access")
        yield w


def wait_for(check, timeout: float = 20.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def test_autoblock_rejects_the_next_message_in_postfix(world):
    marker = f"ab{time.monotonic_ns()}"
    for i in range(3):
        proc = world.send_spam("promo@massmail.example", "News <news@massmail.example>",
                               f"{marker}-{i}")
        assert proc.returncode == 0, proc.stdout
    def spam_events():  # committed by the milter's writer just after each answer
        with world.db.session() as s:
            found = s.scalars(select(MailEvent).where(MailEvent.subject.like(f"%{marker}%"))).all()
        return found if len(found) == 3 else None

    spam = wait_for(spam_events, what="three spam events")
    assert all(e.is_spam for e in spam)
    # The milter's spam hook added the rule and rewrote the table after its commit.
    rule = wait_for(lambda: next((r for r in world.rules() if r.value == "massmail.example"),
                                 None), what="auto-block rule")  # fmt: skip
    assert (rule.source, rule.kind, rule.enabled) == ("auto", "sender_domain", True)
    text = f"Plz stop sending SPAM id={rule.id}"
    table = Path(world.settings.blocklist_file)
    wait_for(lambda: text in table.read_text(), what="rule in header_checks")

    # header_checks: an innocent envelope sender, the blocked domain in From:. Until the
    # cleanup processes have reloaded the table, the milter's own block check refuses
    # (its text unquoted); Postfix's header_checks answer with the table's quoted text.
    def refused_by_header_checks() -> subprocess.CompletedProcess | None:
        proc = world.send_spam("bounce@esp.example", "News <news@mail.massmail.example>",
                               f"{marker}-hc")  # fmt: skip
        if proc.returncode != 0:
            assert text in proc.stdout, proc.stdout  # refused, by the milter or Postfix
        return proc if f'"{text}"' in proc.stdout else None

    proc = wait_for(refused_by_header_checks, what="header_checks refusal after reload")
    assert f'550 5.7.1 "{text}"' in proc.stdout, proc.stdout
    # Postfix's log is written by postlogd, a moment after the SMTP answer.
    wait_for(lambda: re.search(r"reject: header From: News <news@mail\.massmail\.example>.*"
                               + text, world.postfix.maillog()), what="the refusal logged")
    # Hits of header_checks rules come from Postfix's log, counted once.
    out = world.cli("blocklist", "hits", str(world.postfix.log_file)).stdout
    assert re.match(rf"[1-9]\d* new hits \(rule {rule.id}: [1-9]", out), out
    with world.db.session() as s:
        counted = s.get(BlockRule, rule.id).hits
    assert counted >= 1
    assert world.cli("blocklist", "hits", str(world.postfix.log_file)).stdout.startswith("0 new")
    # A sender merely named elsewhere in the headers is not refused.
    ok = swaks(world.postfix.smtp_port, to="shop.example@example.net",
               sender="friend@ok.example",
               header={"From": "friend@ok.example", "Subject": "about massmail.example"})
    assert ok.returncode == 0, ok.stdout

    # check_sender_access through lookupd refuses the envelope sender before DATA.
    assert postmap_query("promo@massmail.example", world.access)[:2] == (0, f"REJECT {text}")
    assert postmap_query("promo@ok.example", world.access)[0] == 1
    proc = world.send_spam("other@massmail.example", "x@ok.example", f"{marker}-access")
    assert proc.returncode != 0
    assert f"554 5.7.1 <other@massmail.example>: Sender address rejected: {text}" in proc.stdout
    assert "DATA" not in proc.stdout.split("Sender address rejected")[0].split("RCPT")[-1]


def test_broken_rule_never_reaches_the_live_file(world):
    world.cli("blocklist", "add", "blocked-before.example")
    table = Path(world.settings.blocklist_file)
    live = table.read_text()
    with world.db.session() as s:
        s.add(BlockRule(kind="regex", value="(unclosed", pattern="/(unclosed/",
                        reject_text="x", source="manual"))  # fmt: skip
    proc = world.cli("blocklist", "write", check=False)
    assert proc.returncode == 1
    assert "Postfix refuses the new table" in proc.stderr and "/(unclosed/" in proc.stderr
    assert table.read_text() == live
    assert [n for n in os.listdir(table.parent) if n.endswith(".new")] == []
    # The old table keeps working in Postfix.
    proc = swaks(world.postfix.smtp_port, to="shop.example@example.net", sender="a@ok.example",
                 header={"From": "x@blocked-before.example"})
    assert proc.returncode != 0 and "Plz stop sending SPAM id=" in proc.stdout
    with world.db.session() as s:
        for rule in s.scalars(select(BlockRule).where(BlockRule.value == "(unclosed")):
            s.delete(rule)


def test_imported_list_works_in_postfix(world):
    out = world.cli("blocklist", "import", str(FIXTURE)).stdout
    skipped = [int(m) for m in re.findall(r"^line (\d+): skipped by Postfix", out, re.M)]
    assert skipped == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    # Postfix loads every rule of the written table without a warning.
    assert hc.postmap_problems(world.settings.blocklist_file,
                               hc.postfix_client_config_dir(world.settings.data_dir)) == []
    by_value = {r.value: r for r in world.rules()}
    # Line 1 was skipped by Postfix as published, line 4 loaded but never refused mail
    # (its action word had non-breaking spaces): both refuse now, with their own ids
    # when those were free (this database already has auto-block rules).
    for header, value in (("x@massnews.gr", "massnews\\.gr"),
                          ("Akis Angelakis <a@b.example>", "Akis.Angelakis")):  # fmt: skip
        rule = by_value[value]

        def refused(header=header, quoted=f'"Plz stop sending SPAM id={rule.id}"'):
            p = swaks(world.postfix.smtp_port, to="shop.example@example.net",
                      sender="a@ok.example", header={"From": header})  # fmt: skip
            return p if quoted in p.stdout else None  # header_checks' answer, once reloaded

        proc = wait_for(refused, what=f"{header} refused by header_checks")
        assert f'550 5.7.1 "Plz stop sending SPAM id={rule.id}"' in proc.stdout, proc.stdout
    # The too-broad repair of line 5 (/from.*/) was imported disabled: ordinary mail passes.
    ok = swaks(world.postfix.smtp_port, to="shop.example@example.net", sender="a@ok.example",
               header={"From": "friend@ok.example", "Subject": "mail from a friend"})
    assert ok.returncode == 0, ok.stdout
    assert "warning: unknown command in header_checks" not in world.postfix.maillog()


def test_failed_reload_reports_postfixs_own_words(world):
    """postfix(1) writes its reason to stderr only when that is a terminal; piped, the
    reason used to be lost ("failed (exit 1):" and nothing after)."""
    pf_dir = Path(tempfile.mkdtemp(prefix="aliasd-hc-stopped-", dir="/tmp"))
    try:
        stopped = PostfixInstance(pf_dir / "pf", relay_port=world.capture.port)  # never started
        env = dict(world.env)
        env["ALIASD_BLOCKLIST_RELOAD_COMMAND"] = f"postfix -c {stopped.config_dir} reload"
        proc = subprocess.run([sys.executable, "-m", "aliasd", "blocklist", "write", "--reload"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1
        assert "Postfix was not reloaded" in proc.stderr
        assert (f"failed (exit 1): {stopped.name}/postfix-script: fatal: the Postfix mail "
                "system is not running") in proc.stderr, proc.stderr
    finally:
        shutil.rmtree(pf_dir, ignore_errors=True)

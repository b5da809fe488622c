"""Blocking policy and the header_checks writer, on SQLite and PostgreSQL: rules checked
by Postfix's own parser (postmap), escaping, the auto-block threshold, safe writes,
reload failures, and importing a real-world list with broken rules."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.core import blocking, events
from aliasd.models import BlockRule, utcnow
from aliasd.postfix import header_checks as hc
from aliasd.postfix import publisher
from aliasd.postfix.config_lines import blocklist_section
from tests.harness.postfix import client_config_dir, postmap_query

# A real list from a live server (copied from shared/fixtures), defects included.
FIXTURE = Path(__file__).parent / "data" / "header_checks.v3"
SKIPPED_BY_POSTFIX = [1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13]


def pcre_query(tmp_path: Path, pattern: str, key: str) -> tuple[int, str, str]:
    table = tmp_path / "one.pcre"
    table.write_text(f"{pattern} REJECT hit\n")
    return postmap_query(key, f"pcre:{table}")


# --- patterns (no database) -------------------------------------------------------------
@pytest.mark.parametrize(
    "header, blocked",
    [
        ("From: news@massnews.gr", True),
        ("From: \"Mass News\" <promo@MASSNEWS.GR>", True),
        ("From: a@mail.massnews.gr", True),
        ("Reply-To: x@massnews.gr", True),
        ("Sender: bounce@massnews.gr", True),
        ("From: Mass News\n <news@massnews.gr>", True),  # folded header
        ("From: a@massnews.gr.example.com", False),
        ("From: a@massnews.gr-shop.com", False),
        ("From: a@notmassnews.gr", False),
        ("To: someone@massnews.gr", False),
        ("Subject: news from massnews.gr", False),
        ("Received: from mx.massnews.gr by mx.example.net", False),
    ],
)
def test_domain_pattern_matches_sender_headers_only(tmp_path, header, blocked):
    pattern = blocking.domain_pattern("massnews.gr")
    status, value, stderr = pcre_query(tmp_path, pattern, header)
    assert stderr == ""
    assert (status == 0) is blocked, (pattern, header)
    if blocked:
        assert value == "REJECT hit"


def test_escaping_keeps_user_data_literal(tmp_path):
    # Every regex metacharacter escaped: the pattern matches the text itself only.
    hostile = "a.b*c+(d)|[e]^$/\\?{2}"
    escaped = blocking.pcre_escape(hostile)
    status, _, stderr = pcre_query(tmp_path, f"/^{escaped}$/", hostile)
    assert (status, stderr) == (0, "")
    assert pcre_query(tmp_path, f"/^{escaped}$/", "aXb*c+(d)|[e]^$/\\?{2}")[0] == 1
    with pytest.raises(blocking.PatternError):
        blocking.pcre_escape("caf\u00e9")


def test_postfix_config_says_who_reloads_postfix_for_a_new_table():
    """With the Production setting (no reload command) the comment names the path unit
    instead of claiming aliasd runs an empty command."""
    def comment(command: str) -> str:
        section = blocklist_section(load_settings(environ={}, blocklist_reload_command=command))
        return " ".join(section.comment.split())

    assert "then runs 'postfix reload'." in comment("postfix reload")
    production = comment("")
    assert "''" not in production
    assert "and reloads nothing (blocklist_reload_command is empty)" in production
    assert "aliasd-postfix-reload.path unit of 'aliasd systemd' reloads Postfix" in production
    assert "without that unit new blocks apply when Postfix restarts" in production


def test_reject_text_template_keeps_ids_and_stays_one_line(settings):
    s = settings.with_overrides(blocklist_reject_text="Go away {id}\n{unknown} \u00a0x")
    assert blocking.format_reject_text(s, 7) == "Go away 7 {unknown} x"
    assert hc.rule_line("/a/", "x\u00a0y\tz") == '/a/ REJECT "x y z"'


# --- rules in the database -----------------------------------------------------------------
@pytest.fixture
def world(database):
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "shop.example@example.net", alice, site="shop.example")
        core.create_alias(s, "forum.example@example.net", alice, site="forum.example")
        core.create_alias(s, "bob-shop@example.net", bob, site="shop.example")
    return database


def spam(db, settings, rcpt: str, sender: str, *, from_domain: str | None = None,
         at: dt.datetime | None = None, is_spam: bool = True) -> None:
    with db.session() as s:
        tgt = events.find_aliases(s, [rcpt], "+")
    facts = events.MessageFacts(envelope_sender=sender, from_domain=from_domain, at=at,
                                subject="cheap pills")
    outcome = events.AppliedVerdict(score=9.0 if is_spam else 0.0, action="add header",
                             is_spam=is_spam)
    events.record_and_notify(db, settings, tgt, facts, outcome)


def rules(db) -> list[BlockRule]:
    with db.session() as s:
        return list(s.scalars(select(BlockRule).order_by(BlockRule.id)))


@pytest.fixture
def policy_settings(settings):
    return settings.with_overrides(
        autoblock_threshold=3, autoblock_period_hours=24, blocklist_reload_command=""
    )


def test_autoblock_after_threshold_within_period_per_user(world, policy_settings):
    st = policy_settings
    old = utcnow() - dt.timedelta(hours=30)
    # Outside the period, ham, and another user's spam do not count.
    spam(world, st, "shop.example@example.net", "a@massnews.gr", at=old)
    spam(world, st, "shop.example@example.net", "a@massnews.gr", at=old)
    spam(world, st, "shop.example@example.net", "a@massnews.gr", is_spam=False)
    spam(world, st, "bob-shop@example.net", "a@massnews.gr")
    spam(world, st, "bob-shop@example.net", "a@massnews.gr")
    spam(world, st, "shop.example@example.net", "a@massnews.gr")
    spam(world, st, "forum.example@example.net", "b@massnews.gr")  # any of alice's aliases
    assert rules(world) == []
    spam(world, st, "shop.example@example.net", "c@massnews.gr")
    [rule] = rules(world)
    assert (rule.kind, rule.value, rule.source, rule.enabled) == (
        "sender_domain", "massnews.gr", "auto", True
    )
    assert rule.reject_text == f"Plz stop sending SPAM id={rule.id}"
    assert rule.pattern == blocking.domain_pattern("massnews.gr")
    # More spam does not add the rule twice.
    spam(world, st, "shop.example@example.net", "d@massnews.gr")
    assert len(rules(world)) == 1


def test_autoblock_counts_from_header_domain_and_protects_own_domains(world, policy_settings):
    st = policy_settings
    for _ in range(3):
        # Forged From: the managed domain must never be blocked; the bounce domain is.
        spam(world, st, "shop.example@example.net", "x@bounces.spam.example",
             from_domain="example.net")
    assert [r.value for r in rules(world)] == ["bounces.spam.example"]
    for _ in range(3):
        spam(world, st, "shop.example@example.net", "", from_domain="real.example")
        # Big mailbox providers are exempt (a block is server-wide), subdomains too.
        spam(world, st, "shop.example@example.net", "someone@gmail.com")
        spam(world, st, "shop.example@example.net", "x@eu.mail.yahoo.com")
    assert [r.value for r in rules(world)] == ["bounces.spam.example"]
    # Already covered by an imported /spam\.example/ rule (a parent domain): nothing added.
    with world.session() as s:
        blocking.add_regex_rule(s, st, "spam\\.example", source="imported")
    for _ in range(3):
        spam(world, st, "shop.example@example.net", "x@news.spam.example")
    assert [r.value for r in rules(world)] == ["bounces.spam.example", "spam\\.example"]
    # Without the exempt list, the shipped baseline of ordinary mail still protects the
    # big mailbox providers: a block of gmail.com would refuse ordinary mail.
    narrow = st.with_overrides(autoblock_exempt_domains=[])
    spam(world, narrow, "shop.example@example.net", "someone@gmail.com")
    assert [r.value for r in rules(world)] == ["bounces.spam.example", "spam\\.example"]


def test_disabled_auto_rule_is_respected_and_manual_block_reenables(world, policy_settings):
    st = policy_settings
    for _ in range(3):
        spam(world, st, "shop.example@example.net", "a@massnews.gr")
    [rule] = rules(world)
    with world.session() as s:
        blocking.set_enabled(s, st, rule.id, False)
    spam(world, st, "shop.example@example.net", "a@massnews.gr")
    assert [r.enabled for r in rules(world)] == [False]
    with world.session() as s:
        again = blocking.block_domain(s, st, "MassNews.GR.", source="manual")
        assert again.id == rule.id and again.enabled
    with world.session() as s, pytest.raises(blocking.BlockError):
        blocking.block_domain(s, st, 'evil.com/ REJECT "x"')


def test_autoblock_publishes_the_table_after_commit(world, policy_settings, tmp_path):
    st = policy_settings.with_overrides(blocklist_file=str(tmp_path / "hc" / "header_checks"))
    world.bind_settings(st)  # as get_database does for every process
    for _ in range(3):
        spam(world, st, "shop.example@example.net", "a@massnews.gr")
    result = publisher.wait_for_publish(st)
    assert isinstance(result, hc.WriteResult), result
    text = Path(st.effective_blocklist_file).read_text()
    [rule] = rules(world)
    assert f'{rule.pattern} REJECT "Plz stop sending SPAM id={rule.id}"' in text.splitlines()
    # A rolled-back transaction never reaches the file.
    with pytest.raises(RuntimeError), world.session() as s:
        blocking.block_domain(s, st, "rolledback.example")
        s.flush()
        raise RuntimeError("abort")
    assert publisher.wait_for_publish(st) is result
    assert "rolledback" not in Path(st.effective_blocklist_file).read_text()


def test_broken_rule_never_reaches_the_live_file(world, settings, tmp_path):
    st = settings.with_overrides(
        blocklist_file=str(tmp_path / "header_checks"), blocklist_reload_command=""
    )
    with world.session() as s:
        blocking.block_domain(s, st, "massnews.gr")
    first = publisher.publish(st, world)
    assert first.changed and first.rules == 1
    live = Path(st.effective_blocklist_file).read_text()
    with world.session() as s:
        # Straight into the table, as a buggy or hand-edited database row would be.
        s.add(BlockRule(kind="regex", value="x(", pattern="/x(/", reject_text="t",
                        source="manual"))
        s.add(BlockRule(kind="regex", value="y", pattern="/y/\u00a0", reject_text="t",
                        source="manual"))
    with pytest.raises(hc.HeaderChecksError) as err:
        publisher.publish(st, world)
    assert Path(st.effective_blocklist_file).read_text() == live
    assert leftovers(tmp_path) == []
    problems = "\n".join(err.value.problems)
    assert "line 4:" in problems and "/x(/" in problems
    assert "line 5:" in problems and "unknown regexp option" in problems


@pytest.fixture
def cli(settings):
    """The aliasd command run in-process (click's runner): the same code path as the
    console command without a Python start-up per call. ``test_failed_reload_is_reported``
    runs the real subprocess."""
    from click.testing import CliRunner

    from aliasd.cli import main
    from tests.harness.cli import settings_env

    def run(*args: str, check: bool = True, env_extra: dict | None = None):
        env = {k: None for k in os.environ if k.startswith("ALIASD_")}
        env.update(settings_env(settings))
        env.update(env_extra or {})
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        if check and result.exit_code != 0:
            raise AssertionError(f"aliasd {' '.join(args)}: {result.output}{result.stderr}")
        result.returncode = result.exit_code
        return result

    return run


def leftovers(directory: Path) -> list[str]:
    return [n for n in os.listdir(directory) if n.endswith(".new")]


def test_failed_reload_is_reported(world, settings, tmp_path, aliasd_cli):
    st = settings.with_overrides(
        blocklist_file=str(tmp_path / "header_checks"), blocklist_reload_command="false"
    )
    with world.session() as s:
        blocking.block_domain(s, st, "massnews.gr")
    result = publisher.publish(st, world)
    assert result.changed and not result.reloaded
    assert "failed (exit 1)" in result.reload_error
    env = {"ALIASD_BLOCKLIST_FILE": st.blocklist_file,
           "ALIASD_BLOCKLIST_RELOAD_COMMAND": "sh -c 'echo postfix is down >&2; exit 3'"}
    proc = aliasd_cli("blocklist", "add", "spam.example", check=False, env_extra=env)
    assert proc.returncode == 1
    assert "was not reloaded" in proc.stderr and "postfix is down" in proc.stderr
    assert "spam\\.example" in Path(st.blocklist_file).read_text()  # the table is in place


def test_cli_add_disable_enable_export(world, cli, tmp_path):
    env = {"ALIASD_BLOCKLIST_FILE": str(tmp_path / "hc"), "ALIASD_BLOCKLIST_RELOAD_COMMAND": "true"}
    out = cli("blocklist", "add", "Spam.Example", env_extra=env).stdout
    rule_id = int(out.split("\t")[0])
    refused = cli("blocklist", "add", "--regex", "/foo(/", check=False, env_extra=env)
    assert refused.returncode == 1 and "Postfix refuses the pattern" in refused.stderr
    cli("blocklist", "add", "--regex", "/^Subject:.*viagra/", env_extra=env)
    assert "spam\\.example" in (tmp_path / "hc").read_text()
    cli("blocklist", "disable", str(rule_id), env_extra=env)
    assert "spam\\.example" not in (tmp_path / "hc").read_text()
    listed = json.loads(cli("blocklist", "list", "--all", "--json").stdout)
    assert [(r["id"], r["enabled"], r["source"]) for r in listed] == [
        (rule_id, False, "manual"), (rule_id + 1, True, "manual")
    ]
    cli("blocklist", "enable", str(rule_id), env_extra=env)
    exported = cli("blocklist", "export").stdout
    assert exported == (tmp_path / "hc").read_text()
    csv_out = cli("blocklist", "export", "--format", "csv").stdout.splitlines()
    assert csv_out[0].startswith("id,kind,value,pattern") and len(csv_out) == 3
    missing = cli("blocklist", "disable", "999", check=False, env_extra=env)
    assert missing.returncode == 1 and "no block rule with id 999" in missing.stderr


# --- import -------------------------------------------------------------------------------
def test_parse_fixture_reports_exactly_the_rules_postfix_skips():
    report = hc.parse_table(FIXTURE.read_text(encoding="utf-8"))
    # The local parser alone agrees with Postfix on which lines are skipped...
    assert report.skipped_lines == SKIPPED_BY_POSTFIX
    postfix_says = hc.postmap_problems(str(FIXTURE), str(client_config_dir()))
    assert sorted(n for n, _ in postfix_says) == SKIPPED_BY_POSTFIX
    assert len(report.rules) == 63 and report.unparsable == []
    by_line = {r.line_no: r for r in report.rules}
    # Line 4: a valid pattern, non-breaking spaces only in the reject text.
    assert not by_line[4].skipped_by_postfix
    assert by_line[4].repaired_line == '/Akis.Angelakis/i REJECT "Plz stop sending SPAM id= 4 "'
    assert by_line[1].repaired_line == '/massnews\\.gr/ REJECT "Plz stop sending SPAM id= 1 "'
    assert by_line[5].pattern == "/from.*/" and by_line[5].too_broad
    assert by_line[56].pattern == "/PRINTEX\\ DIGITAL/i"
    assert [r.original_id for r in report.rules] == list(range(1, 64))
    # Every repaired rule is one Postfix accepts.
    config = str(client_config_dir())
    repaired = "\n".join(r.repaired_line for r in report.rules) + "\n"
    assert "\u00a0" not in repaired
    with open(Path(config) / "repaired.pcre", "w") as fh:
        fh.write(repaired)
    assert hc.postmap_problems(str(Path(config) / "repaired.pcre"), config) == []


def test_import_cli_reports_lines_keeps_ids_and_writes_a_clean_table(world, cli, tmp_path):
    env = {"ALIASD_BLOCKLIST_FILE": str(tmp_path / "hc"), "ALIASD_BLOCKLIST_RELOAD_COMMAND": "true"}
    dry = cli("blocklist", "import", "--dry-run", str(FIXTURE), env_extra=env).stdout
    skipped = [int(line.split(":")[0].split()[1]) for line in dry.splitlines()
               if line.startswith("line ") and ": skipped by Postfix:" in line]
    assert skipped == SKIPPED_BY_POSTFIX
    assert "line 4: defective: non-breaking spaces in the action" in dry
    assert '    repaired: /massnews\\.gr/ REJECT "Plz stop sending SPAM id= 1 "' in dry
    assert "Postfix skips 12 (lines 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13)" in dry
    assert rules(world) == []  # dry run changes nothing
    out = cli("blocklist", "import", str(FIXTURE), env_extra=env).stdout
    assert "63 rules imported" in out
    imported = rules(world)
    assert [r.id for r in imported] == list(range(1, 64))  # the ids senders were told
    assert {r.source for r in imported} == {"imported"}
    assert [r.id for r in imported if not r.enabled] == [5]  # /from.*/ would refuse all mail
    table = (tmp_path / "hc").read_text()
    assert hc.postmap_problems(str(tmp_path / "hc"), str(client_config_dir())) == []
    assert '/massnews\\.gr/ REJECT "Plz stop sending SPAM id=1"' in table.splitlines()
    assert "/from.*/" not in table
    again = cli("blocklist", "import", str(FIXTURE), env_extra=env).stdout
    assert "0 rules imported; 63 already in the blocklist" in again
    # New rules continue after the imported ids (PostgreSQL's sequence moved too).
    new = cli("blocklist", "add", "late.example", env_extra=env).stdout
    assert new.startswith("64\t")


# --- the sender_access map -----------------------------------------------------------------
def test_access_map_answers_reject_notfound_and_temp(world, policy_settings):
    import asyncio

    from aliasd.core.decision import LookupOutcome
    from aliasd.db import Database
    from aliasd.lookup.access_map import SenderAccessMap
    from tests.harness.net import free_port

    with world.session() as s:
        rule = blocking.block_domain(s, policy_settings, "massnews.gr")
        s.add(BlockRule(kind="regex", value="spam\\.example", pattern="/spam\\.example/",
                        reject_text="imported id=9", source="imported"))
        s.add(BlockRule(kind="regex", value="^Subject:.*x", pattern="/^Subject:.*x/",
                        reject_text="not a domain", source="manual"))
        off = blocking.block_domain(s, policy_settings, "off.example")
        off.enabled = False
    now = [1000.0]
    amap = SenderAccessMap(world, max_staleness=5.0, clock=lambda: now[0])
    assert asyncio.run(amap.lookup("a@massnews.gr")).outcome is LookupOutcome.TEMP  # not loaded yet
    amap.refresh()

    def answer(key: str):
        return asyncio.run(amap.lookup(key))

    text = f"REJECT Plz stop sending SPAM id={rule.id}"
    for key in ("promo@massnews.gr", "<Promo@MassNews.GR>", "x@mail.massnews.gr", "massnews.gr"):
        decision = answer(key)
        assert (decision.outcome, decision.value) == (LookupOutcome.FOUND, text), key
    assert answer("x@spam.example").value == "REJECT imported id=9"  # imported domain pattern
    for key in ("x@massnews.gr.example.com", "x@notmassnews.gr", "x@off.example", "", "<>",
                "not an address@", "x@[192.0.2.1]", "x@example.net"):
        assert answer(key).outcome is LookupOutcome.NOTFOUND, key
    # Hits are counted in memory and reach the rule on the next refresh.
    amap.refresh()
    with world.session() as s:
        assert s.get(BlockRule, rule.id).hits == 4
    # Stale copy (database unreachable for longer than max_staleness): TEMP, never NOTFOUND.
    now[0] += 6
    assert answer("x@example.net").outcome is LookupOutcome.TEMP
    down = SenderAccessMap(Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x",
                                    timeout=1))
    with pytest.raises(Exception):  # noqa: B017 - any driver error
        down.refresh()
    assert asyncio.run(down.lookup("a@massnews.gr")).outcome is LookupOutcome.TEMP


def test_concurrent_writers_from_several_processes_keep_every_rule(world, settings, tmp_path):
    """Milter, web workers and CLI each rewrite the table: with the file lock, the last
    write always holds every committed rule."""
    import subprocess
    import sys

    from tests.harness.cli import settings_env

    env = settings_env(settings)
    env.update(ALIASD_BLOCKLIST_FILE=str(tmp_path / "hc"), ALIASD_BLOCKLIST_RELOAD_COMMAND="")
    procs = [
        subprocess.Popen([sys.executable, "-m", "aliasd", "blocklist", "add", f"s{i}.example"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
    table = (tmp_path / "hc").read_text()
    assert all(f"s{i}\\.example" in table for i in range(4)), table


def test_log_hits_are_counted_once_and_survive_rotation(world, settings, tmp_path):
    with world.session() as s:
        rule = blocking.block_domain(s, settings, "massnews.gr")
    log = tmp_path / "maillog"
    line = ('Nov 25 16:50:07 mx postfix/cleanup[20114]: CCD9D20C6E1: reject: header From: '
            'Foo <x@massnews.gr> from localhost[127.0.0.1]; from=<a@b.example> '
            'to=<x@example.net> proto=ESMTP helo=<h>: 5.7.1 "Plz stop sending SPAM id=1"\n')
    other = line.replace("id=1", "id=99")
    log.write_text(line + other + line + line[:40])  # a half-written last line
    assert hc.collect_log_hits(settings, str(log), world) == {rule.id: 2}
    assert hc.collect_log_hits(settings, str(log), world) == {}
    with open(log, "a") as fh:
        fh.write(line[40:] + line)
    assert hc.collect_log_hits(settings, str(log), world) == {rule.id: 2}
    log.unlink()
    log.write_text(line.replace("16:50:07", "17:00:00"))  # rotated: a new file starts over
    assert hc.collect_log_hits(settings, str(log), world) == {rule.id: 1}
    with world.session() as s:
        assert s.get(BlockRule, rule.id).hits == 5
        assert s.get(BlockRule, rule.id).last_hit_at is not None


def test_import_keeps_only_refusing_rules(world, cli, tmp_path):
    table = tmp_path / "mixed.pcre"
    table.write_text(
        "# comment\n"
        "/^Subject:.*newsletter/ WARN newsletter seen\n"
        "/^X-Mailer: bulk/ PREPEND X-Bulk: yes\n"
        "/pills\\.example/ 550 no pills here\n"
        "/watches\\.example/ reject\n"
        "if /^From:/\n"
        "/x/ REJECT\n"
        "endif\n"
        "  continuation\n"
    )
    env = {"ALIASD_BLOCKLIST_FILE": str(tmp_path / "hc"), "ALIASD_BLOCKLIST_RELOAD_COMMAND": ""}
    out = cli("blocklist", "import", str(table), env_extra=env).output
    assert "line 2: not imported: its action 'WARN' does not refuse mail" in out
    assert "line 3: not imported: its action 'PREPEND' does not refuse mail" in out
    assert "line 6: not imported: if/endif blocks are not supported" in out
    assert "line 9: not imported: continuation lines" in out
    assert "line 7: not imported: inside an if/endif block" in out
    assert "2 rules imported" in out
    assert [r.pattern for r in rules(world)] == ["/pills\\.example/", "/watches\\.example/"]


def test_import_never_turns_a_deferring_rule_into_a_bounce(world, aliasd_cli, tmp_path):
    """aliasd's table holds REJECT rules only (5xx). An imported rule answering 4xx
    defers the mail (the sender retries); imported as REJECT it would bounce it."""
    table = tmp_path / "old_header_checks"
    table.write_text(
        "/^Subject:.*later/ 450 4.7.1 Try again later\n"
        "/^Subject:.*never/ 554 5.7.1 Go away id=7\n"
    )
    live = tmp_path / "hc"
    env = {"ALIASD_BLOCKLIST_FILE": str(live), "ALIASD_BLOCKLIST_RELOAD_COMMAND": "true"}
    out = aliasd_cli("blocklist", "import", str(table), env_extra=env).stdout
    assert "line 1: not imported" in out
    assert "1 rules imported" in out
    assert [r.pattern for r in rules(world)] == ["/^Subject:.*never/"]
    assert "later" not in live.read_text()


def test_rules_added_on_another_host_reach_this_hosts_header_checks(database, settings, tmp_path):
    """Two hosts share the database; each has its own Postfix and header_checks file. A
    rule added on host A (its web app or milter writes A's file) must reach host B's file
    too, through B's running lookupd, which follows the block list anyway."""
    from pathlib import Path

    from aliasd.core import blocking
    from aliasd.lookup.access_map import SenderAccessMap
    from aliasd.postfix import header_checks as hc

    host_a = settings.with_overrides(blocklist_file=str(tmp_path / "a" / "header_checks"))
    host_b = settings.with_overrides(blocklist_file=str(tmp_path / "b" / "header_checks"))
    with database.session() as s:
        blocking.block_domain(s, host_a, "first.example")
    b_map = SenderAccessMap(database, settings=host_b)
    b_map.refresh()
    with database.session() as s:
        rule = blocking.block_domain(s, host_a, "massnews.gr")
    hc.sync_blocklist(host_a, database)
    b_map.refresh()  # host B's lookupd, next background step
    result = hc.wait_for_sync(host_b)
    assert isinstance(result, hc.WriteResult), result
    b_file = Path(host_b.effective_blocklist_file).read_text()
    assert f"{rule.pattern} REJECT" in b_file and "first\\.example" in b_file
    assert b_file == Path(host_a.effective_blocklist_file).read_text()

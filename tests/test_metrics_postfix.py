"""Prometheus metrics and `aliasd stat` with the real Postfix as the client: a lookup
through Postfix's socketmap client (postmap -q) and a message through a real smtpd with
the milter move the counters that lookupd's and the milter's /metrics report; `aliasd
stat` counts a message within seconds on an otherwise idle milter."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.models import Counter
from aliasd.postfix.config_lines import postfix_table
from aliasd.postfix.milter_lines import postfix_milter_settings
from tests.harness.cli import settings_env
from tests.harness.databases import open_clean_database
from tests.harness.net import free_port, wait_for_milter, wait_for_port
from tests.harness.postfix import CaptureServer, PostfixInstance, postmap_query, swaks
from tests.harness.processes import start_logged, stop_process

pytestmark = pytest.mark.postfix

ALIAS = "github.com@example.net"
MAILBOX = "alice@real.example"
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(port: int) -> dict[str, float]:
    """``name{labels}`` → value, from a /metrics page."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


def moved(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


class World:
    pass


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"metrics-{request.param}")
    db = open_clean_database(request.param, base, request)
    with db.session() as s:
        alice = core.create_user(s, "alice", MAILBOX)
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, ALIAS, alice, site="github.com")
    settings = load_settings(environ={}, data_dir=str(base / "data"), database_url=db.url,
                             env="development", secret_key="t" * 20,
                             milter_listen=f"127.0.0.1:{free_port()}")
    env = settings_env(settings)
    env.update(ALIASD_MILTER_LISTEN=settings.milter_listen, ALIASD_BLOCKLIST_RELOAD_COMMAND="true")
    w = World()
    w.db, w.env = db, env
    w.lookup_port, w.lookup_metrics, w.milter_metrics = free_port(), free_port(), free_port()
    w.dead_port, w.dead_metrics = free_port(), free_port()
    lookupd = start_logged(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{w.lookup_port}",
         "--tcp", "", "--metrics", f"127.0.0.1:{w.lookup_metrics}"], env, base / "lookupd.log")
    # The same through the setting, with a database that is not there: it answers TEMP.
    dead_env = dict(env, ALIASD_DATABASE_URL=f"postgresql+psycopg://x@127.0.0.1:{free_port()}/x",
                    ALIASD_DB_TIMEOUT="1", ALIASD_LOOKUP_METRICS=f"127.0.0.1:{w.dead_metrics}")
    dead = start_logged(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{w.dead_port}",
         "--tcp", ""], dead_env, base / "dead.log")
    milter = start_logged(
        [sys.executable, "-m", "aliasd", "milter", "--metrics", f"127.0.0.1:{w.milter_metrics}"],
        env, base / "milter.log")
    table = postfix_table("socketmap", f"127.0.0.1:{w.lookup_port}", "virtual")
    w.table = table
    w.capture = CaptureServer()
    w.capture.start()
    pf_dir = Path(tempfile.mkdtemp(prefix="aliasd-metrics-pf-", dir="/tmp"))
    os.chmod(pf_dir, 0o755)
    w.postfix = PostfixInstance(
        pf_dir / "pf", relay_port=w.capture.port,
        main_cf={"virtual_alias_domains": table, "virtual_alias_maps": table,
                 **postfix_milter_settings(settings)})
    for port in (w.lookup_port, w.lookup_metrics, w.dead_port, w.dead_metrics, w.milter_metrics):
        wait_for_port(port, timeout=30)
    wait_for_milter(settings.milter_listen)
    w.postfix.start()
    yield w
    milter.send_signal(signal.SIGTERM)
    w.postfix.stop()
    w.capture.stop()
    for proc in (lookupd, dead, milter):
        stop_process(proc)
    shutil.rmtree(pf_dir, ignore_errors=True)
    db.dispose()


def _wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_lookupd_counts_postfix_lookups_by_map_and_result(world):
    _wait_until(lambda: postmap_query(ALIAS, world.table)[0] == 0, 20, "lookupd loaded")
    before = scrape(world.lookup_metrics)
    assert postmap_query(ALIAS, world.table)[:2] == (0, MAILBOX)
    assert postmap_query("nobody@elsewhere.example", world.table)[0] == 1
    after = scrape(world.lookup_metrics)
    assert moved(before, after, 'aliasd_lookup_queries_total{map="virtual",result="found"}') == 1
    assert moved(before, after, 'aliasd_lookup_queries_total{map="virtual",result="notfound"}') == 1
    assert moved(before, after, 'aliasd_lookup_seconds_count{map="virtual"}') == 2
    assert after['aliasd_lookup_temp_answers_total{map="virtual"}'] == 0
    age = after['aliasd_lookup_sync_age_seconds{map="virtual"}']
    assert 0 <= age < 5.0  # synced every 0.25 s; TEMP only past lookup_max_staleness


def test_lookupd_counts_temp_answers_when_the_database_is_unreachable(world):
    dead_table = postfix_table("socketmap", f"127.0.0.1:{world.dead_port}", "virtual")
    status, out, err = postmap_query(ALIAS, dead_table)
    assert status != 0 and not out and "socketmap server temporary error" in err, err
    samples = scrape(world.dead_metrics)
    assert samples['aliasd_lookup_temp_answers_total{map="virtual"}'] >= 1
    assert samples['aliasd_lookup_queries_total{map="virtual",result="temp"}'] >= 1
    assert samples['aliasd_lookup_sync_age_seconds{map="virtual"}'] == float("inf")


def _stat_scanned(world) -> int:
    proc = subprocess.run([sys.executable, "-m", "aliasd", "stat"], env=world.env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return int(re.search(r"^Messages scanned: (\d+)$", proc.stdout, re.M).group(1))


def _scanned_in_database(world) -> int:
    with world.db.session() as s:
        return sum(s.scalars(select(Counter.value).where(Counter.name.startswith("scanned:"))))


def test_a_message_through_postfix_moves_the_milter_counters_and_aliasd_stat(world):
    before = scrape(world.milter_metrics)
    scanned_before = _stat_scanned(world)
    assert _scanned_in_database(world) == scanned_before
    marker = f"metrics-{time.monotonic_ns()}"
    proc = swaks(world.postfix.smtp_port, to=ALIAS, sender="noreply@github.com",
                 header={"From": "GitHub <noreply@github.com>", "Subject": f"Merged {marker}"},
                 body="Hello, your pull request was merged.")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    msg = world.capture.wait_for(lambda m: marker in m.text)
    delivered_at = time.monotonic()
    action = msg.header("X-Spamd-Result")
    assert action is not None
    after = scrape(world.milter_metrics)
    assert moved(before, after, 'aliasd_milter_messages_total{action="no action"}') == 1
    assert moved(before, after, "aliasd_milter_events_written_total") == 1
    assert moved(before, after, "aliasd_milter_scan_seconds_count") == 1
    assert moved(before, after, "aliasd_milter_process_seconds_count") == 1
    assert sum(v for k, v in after.items() if k.startswith("aliasd_milter_faults_total")) == 0

    # No further mail arrives: the milter's counters still reach the database in seconds
    # (polled in the database, then 'aliasd stat' is run once) ...
    _wait_until(lambda: _scanned_in_database(world) == scanned_before + 1, 10,
                "the milter's counters to reach the database")
    assert time.monotonic() - delivered_at < 10
    # ... where 'aliasd stat' counts the message
    assert _stat_scanned(world) == scanned_before + 1

"""End to end through a real Postfix: a message scoring between the quarantine and
reject thresholds is accepted, held in Postfix's hold queue (not forwarded), listed
by ``aliasd quarantine list``, and released (learning it as ham) or deleted; the
one-click headers ride along on forwarded mail. One Postfix and one milter per engine."""

from __future__ import annotations

import json
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

from aliasd.config import load_settings
from aliasd.core import aliases as core
from tests.harness.cli import run_cli_in_process, settings_env
from tests.harness.databases import open_clean_database
from tests.harness.net import free_port, wait_for_port
from tests.harness.postfix import CaptureServer, PostfixInstance, swaks
from tests.harness.processes import start_logged, stop_process

pytestmark = pytest.mark.postfix

ALIAS = "github.com@example.net"
MAILBOX = "alice@real.example"
BASE_URL = "http://aliasd.test"


class World:
    def __init__(self, db, settings, env, postfix, capture):
        self.db, self.settings, self.env = db, settings, env
        self.postfix, self.capture = postfix, capture

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli_in_process(self.env, args)

    def held(self) -> list[dict]:
        proc = self.cli("quarantine", "list", "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def postfix_hold_queue(self) -> list[str]:
        proc = subprocess.run(["postqueue", "-c", str(self.postfix.config_dir), "-j"],
                              capture_output=True, text=True, check=True)
        return [e["queue_id"] for e in map(json.loads, proc.stdout.splitlines())
                if e["queue_name"] == "hold"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"quarantine-{request.param}")
    db = open_clean_database(request.param, base, request)
    with db.session() as s:
        alice = core.create_user(s, "alice", MAILBOX)
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, ALIAS, alice, site="github.com")
    pf_dir = Path(tempfile.mkdtemp(prefix="aliasd-quarantine-pf-", dir="/tmp"))
    os.chmod(pf_dir, 0o755)
    capture = CaptureServer()
    capture.start()
    settings = load_settings(
        environ={}, data_dir=str(base / "data"), database_url=db.url, env="development",
        secret_key="test-secret", milter_listen=f"127.0.0.1:{free_port()}",
    )  # fmt: skip
    lookup_port = free_port()
    from aliasd.postfix.config_lines import postfix_table
    from aliasd.postfix.milter_lines import postfix_milter_settings

    table = postfix_table("socketmap", f"127.0.0.1:{lookup_port}", "virtual")
    postfix = PostfixInstance(pf_dir / "pf", relay_port=capture.port, main_cf={
        "virtual_alias_domains": table, "virtual_alias_maps": table,
        "recipient_delimiter": "+", **postfix_milter_settings(settings)})
    env = settings_env(settings)
    env.update(
        ALIASD_MILTER_LISTEN=settings.milter_listen,
        ALIASD_BLOCKLIST_RELOAD_COMMAND="true",
        ALIASD_QUARANTINE_SCORE="5",
        ALIASD_POSTFIX_CONFIG_DIR=str(postfix.config_dir),
        ALIASD_WEB_BASE_URL=BASE_URL,
    )
    milter = start_logged([sys.executable, "-m", "aliasd", "milter"], env, base / "milter.log")
    lookupd = start_logged(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{lookup_port}",
         "--tcp", ""], env, base / "lookupd.log")  # fmt: skip
    wait_for_port(lookup_port)
    wait_for_port(int(settings.milter_listen.rsplit(":", 1)[1]))
    postfix.start()
    yield World(db, load_settings(environ=env), env, postfix, capture)
    for proc in (milter, lookupd):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    postfix.stop()
    capture.stop()
    for proc in (milter, lookupd):
        stop_process(proc)
    shutil.rmtree(pf_dir, ignore_errors=True)
    db.dispose()


def _send_suspicious(world: World, marker: str) -> subprocess.CompletedProcess:
    # Capitals in the subject, undisclosed recipients, X-Priority 1, a sender unrelated
    # to the alias's site: about 8 points, between quarantine (5) and reject (15).
    return swaks(
        world.postfix.smtp_port, to=ALIAS, sender="offers@deals.example",
        header={"From": "offers@deals.example", "To": "undisclosed-recipients:;",
                "Subject": f"CHEAP WATCHES TODAY {marker.upper()}", "X-Priority": "1"},
        body=f"Original body line {marker}\nBest regards.",
    )  # fmt: skip


def _wait(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.1)


def _learned_ham(world: World) -> int:
    proc = world.cli("stat")
    assert proc.returncode == 0, proc.stderr
    return int(re.search(r"BAYES_HAM type: \w+; learned: (\d+)", proc.stdout).group(1))


def test_suspicious_message_is_held_listed_and_released_as_ham(world):
    marker = f"held{time.monotonic_ns()}"
    proc = _send_suspicious(world, marker)
    assert proc.returncode == 0, proc.stdout + proc.stderr  # 250: accepted from the sender
    [row] = _wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    assert row["alias"] == ALIAS and row["sender"] == "offers@deals.example"
    assert 5 <= row["score"] < 15 and "SUBJ_ALL_CAPS" in row["symbols"]
    assert row["queue_id"] in _wait(world.postfix_hold_queue)
    time.sleep(1.0)  # would it be forwarded? it must not
    assert not [m for m in world.capture.messages if marker in m.text]

    before = _learned_ham(world)
    proc = world.cli("quarantine", "release", str(row["id"]), "--learn-ham")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "released (learning: learned)" in proc.stdout
    msg = world.capture.wait_for(lambda m: marker in m.text)
    assert msg.rcpt_tos == [MAILBOX]
    assert f"Original body line {marker}\r\nBest regards." in msg.text
    assert msg.header("Subject") == f"CHEAP WATCHES TODAY {marker.upper()}"  # not rewritten
    assert msg.header("X-Aliasd-Alias") == f"{ALIAS} (site github.com)"
    assert _learned_ham(world) == before + 1
    assert row["queue_id"] not in world.postfix_hold_queue()

    again = world.cli("quarantine", "release", str(row["id"]))
    assert again.returncode == 1
    assert f"quarantined message {row['id']} was already released" in again.stderr


def test_held_message_deleted_with_learn_spam_is_gone_from_postfix(world):
    marker = f"del{time.monotonic_ns()}"
    assert _send_suspicious(world, marker).returncode == 0
    [row] = _wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    _wait(lambda: row["queue_id"] in world.postfix_hold_queue())
    proc = world.cli("quarantine", "delete", str(row["id"]), "--learn-spam")
    assert proc.returncode == 0, proc.stderr
    assert "deleted (learning: learned)" in proc.stdout
    assert row["queue_id"] not in world.postfix_hold_queue()
    assert not [r for r in world.held() if r["id"] == row["id"]]
    again = world.cli("quarantine", "release", str(row["id"]))
    assert again.returncode == 1 and "was already deleted" in again.stderr


def test_releasing_a_message_postfix_no_longer_holds_says_so(world):
    marker = f"gone{time.monotonic_ns()}"
    assert _send_suspicious(world, marker).returncode == 0
    [row] = _wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    _wait(lambda: row["queue_id"] in world.postfix_hold_queue())
    subprocess.run(["postsuper", "-c", str(world.postfix.config_dir), "-d", row["queue_id"]],
                   capture_output=True, check=True)
    proc = world.cli("quarantine", "release", str(row["id"]))
    assert proc.returncode == 1
    assert "no longer in Postfix's hold queue; nothing was delivered" in proc.stderr
    listed = json.loads(world.cli("quarantine", "list", "--all", "--json").stdout)
    assert [r["state"] for r in listed if r["id"] == row["id"]] == ["purged"]


def test_clean_message_is_forwarded_with_one_click_headers(world):
    marker = f"clean{time.monotonic_ns()}"
    proc = swaks(world.postfix.smtp_port, to=ALIAS, sender="noreply@github.com",
                 header={"From": "GitHub <noreply@github.com>", "Subject": f"Merged {marker}"},
                 body="Your pull request was merged.")
    assert proc.returncode == 0, proc.stdout
    msg = world.capture.wait_for(lambda m: marker in m.text)
    disable = msg.header("X-Aliasd-Disable")
    assert disable.startswith(f"<{BASE_URL}/oneclick/")
    assert msg.header("List-Unsubscribe") == disable
    assert msg.header("List-Unsubscribe-Post") == "List-Unsubscribe=One-Click"
    assert msg.header("X-Aliasd-Block-Sender").startswith(f"<{BASE_URL}/oneclick/")

"""End to end through a real Postfix: learning from the mailbox (spam@ / ham@ of a
managed domain) and the daily digest. One Postfix and one milter per engine."""

from __future__ import annotations

import time

import pytest

from tests.harness.cli import run_cli_in_process
from tests.harness.quarantine_world import (
    ALIAS,
    MAILBOX,
    forward_as_attachment,
    learned_spam,
    running_world,
    send_suspicious,
    smtp,
    wait,
)

pytestmark = pytest.mark.postfix


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    with running_world(request, tmp_path_factory, request.param) as w:
        yield w


def test_owner_forwarding_a_missed_spam_to_spam_at_domain_teaches_the_filter(world):
    marker = f"fwd{time.monotonic_ns()}"
    inner = (f"From: winner@lottery.example\nTo: {ALIAS}\nSubject: You won {marker}\n"
             f"Message-ID: <{marker}@lottery.example>\n\n"
             "Claim your prize of one million dollars now, send your bank details.\n").encode()
    before = learned_spam(world)
    code, text = smtp(world, MAILBOX, "spam@example.net",
                       forward_as_attachment(MAILBOX, "spam@example.net", inner))
    assert code == 250, text
    assert learned_spam(world) == before + 1
    time.sleep(0.5)
    assert not [m for m in world.capture.messages if marker in m.text]  # consumed, not sent on


def test_spam_at_domain_refuses_strangers_and_explains_a_missing_attachment(world):
    inner = b"From: a@b.example\nSubject: x\n\nsome spam text here\n"
    before = learned_spam(world)
    code, text = smtp(world, "mallory@evil.example", "spam@example.net",
                       forward_as_attachment("mallory@evil.example", "spam@example.net", inner))
    assert code == 550 and "Only the owner of example.net may write" in text
    code, text = smtp(world, MAILBOX, "ham@example.net",
                       forward_as_attachment(MAILBOX, "ham@example.net", None))
    assert code == 550 and "no message attached" in text
    broken = forward_as_attachment(MAILBOX, "spam@example.net", b"").replace(
        b"Content-Disposition", b"X-Nothing")
    code, text = smtp(world, MAILBOX, "spam@example.net", broken)
    assert code == 550 and "empty or broken" in text, text
    assert learned_spam(world) == before



def test_daily_digest_mails_the_owner_what_is_held(world):
    marker = f"digest{time.monotonic_ns()}"
    assert send_suspicious(world, marker).returncode == 0
    wait(lambda: [r for r in world.held() if marker.upper() in (r["subject"] or "")])
    off = world.cli("quarantine", "digest")
    assert off.returncode == 0 and "quarantine_digest is off: nothing sent" in off.stdout
    env = dict(world.env, ALIASD_QUARANTINE_DIGEST="1", ALIASD_SENDMAIL_COMMAND=",".join(
        ["sendmail", "-C", str(world.postfix.config_dir), "-t", "-i"]))
    proc = run_cli_in_process(env, ("quarantine", "digest", "--hours", "1"))
    assert proc.returncode == 0, proc.stderr
    assert f"digest sent to {MAILBOX}" in proc.stdout
    digest = world.capture.wait_for(lambda m: "held for review" in (m.header("Subject") or "")
                                    and marker.upper() in m.text)
    assert digest.rcpt_tos == [MAILBOX] and digest.header("Auto-Submitted") == "auto-generated"
    assert f"{ALIAS}" in digest.text and f"{world.base_url}/quarantine/" in digest.text

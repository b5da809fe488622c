"""The hold decision in the mail path (MailPath, no milter protocol) on SQLite and
PostgreSQL: who is held, and a message that must be held but cannot be recorded is
deferred (451), never forwarded or lost."""

from __future__ import annotations

from sqlalchemy import select

from aliasd.doctor import quarantine_check
from aliasd.milter.processing import Envelope, MailPath
from aliasd.models import QuarantinedMessage, User
from aliasd.scanner import Action, ScanResult, Symbol
from tests import test_milter_processing as mail_path
from tests.harness.quarantine_world import forward_as_attachment
from tests.test_milter_processing import FixedScanner, envelope, events

world = mail_path.world  # the same users, domains and aliases as the mail-path tests

HELD = ScanResult(score=9.5, required_score=15.0, action=Action.REWRITE_SUBJECT,
                  symbols=[Symbol("SUBJ_ALL_CAPS", 3.0)])


def _held(db) -> list[QuarantinedMessage]:
    with db.session() as s:
        return list(s.scalars(select(QuarantinedMessage)))


def test_a_message_between_the_thresholds_is_held_unchanged(world, settings):
    path = MailPath(settings.with_overrides(quarantine_score=8.0), world,
                    scanner=FixedScanner(HELD))
    verdict = path.process(envelope())
    assert verdict.status == "quarantine" and verdict.reply is None
    assert verdict.new_subject is None  # a released message keeps its Subject
    [row] = _held(world)
    assert row.queue_id == "QID1" and row.alias_address == "github.com@example.net"
    assert row.score == 9.5 and "SUBJ_ALL_CAPS" in row.symbols and "merged" in row.preview
    assert [e.action for e in events(world)] == ["quarantine"]
    path.close()


def test_below_the_score_or_with_the_owner_opted_out_it_is_forwarded(world, settings):
    path = MailPath(settings.with_overrides(quarantine_score=10.0), world,
                    scanner=FixedScanner(HELD))
    assert path.process(envelope()).status == "accept"
    with world.session() as s:
        s.scalar(select(User).where(User.username == "alice")).quarantine_score = 0.0
    path = MailPath(settings.with_overrides(quarantine_score=5.0), world,
                    scanner=FixedScanner(HELD))
    assert path.process(envelope()).status == "accept"
    assert _held(world) == []
    path.close()


def test_a_users_threshold_change_applies_within_the_ttl(world, settings, monkeypatch):
    import time

    from aliasd.milter import review

    monkeypatch.setattr(review, "THRESHOLD_TTL", 0.2)
    path = MailPath(settings.with_overrides(quarantine_score=10.0), world,
                    scanner=FixedScanner(HELD))
    assert path.process(envelope()).status == "accept"
    with world.session() as s:
        s.scalar(select(User).where(User.username == "alice")).quarantine_score = 5.0
    time.sleep(0.25)
    message = envelope()
    message.queue_id = "QID2"
    assert path.process(message).status == "quarantine"
    path.close()


def test_aliases_of_two_owners_are_not_held(world, settings):
    path = MailPath(settings.with_overrides(quarantine_score=5.0), world,
                    scanner=FixedScanner(HELD))
    verdict = path.process(envelope(rcpts=["github.com@example.net", "b@bob.example"]))
    assert verdict.status == "accept" and _held(world) == []
    path.close()


def test_a_full_quarantine_defers_the_sender(world, settings, caplog):
    path = MailPath(settings.with_overrides(quarantine_score=5.0, quarantine_max_held=0), world,
                    scanner=FixedScanner(HELD))
    verdict = path.process(envelope())
    assert verdict.status == "tempfail"
    assert verdict.reply == ("451", "4.3.0", "Message could not be kept for review; try again later")
    assert "ALARM: quarantine full (0 messages held)" in caplog.text
    path.close()


def test_aliasd_doctor_warns_as_the_quarantine_fills_and_fails_when_full(world, settings):
    full = settings.with_overrides(quarantine_score=5.0, quarantine_max_held=10)
    assert quarantine_check(full, world).status == "ok"
    path = MailPath(full, world, scanner=FixedScanner(HELD))
    for n in range(10):
        message = envelope()
        message.queue_id = f"QID{n}"
        assert path.process(message).status == "quarantine"
        if n == 8:
            nearly = quarantine_check(full, world)
            assert nearly.status == "warn" and "9 of 10 held" in nearly.line()
    check = quarantine_check(full, world)
    assert check.status == "fail" and "senders are deferred (451)" in check.line()
    assert "aliasd quarantine list" in check.line()
    path.close()


def test_without_a_queue_id_the_message_is_deferred_not_forwarded(world, settings):
    path = MailPath(settings.with_overrides(quarantine_score=5.0), world,
                    scanner=FixedScanner(HELD))
    env = envelope()
    env.queue_id = None
    verdict = path.process(env)
    assert verdict.status == "tempfail" and verdict.reply[0] == "451"
    assert _held(world) == []
    path.close()


def _learning_mail(client_addr: str) -> Envelope:
    raw = forward_as_attachment("alice@real.example", "spam@example.net",
                                b"From: a@b.example\nSubject: pills\n\ncheap pills here\n")
    message = Envelope(sender="alice@real.example", recipients=["spam@example.net"],
                       client_addr=client_addr, helo="mail.real.example", queue_id="QID9")
    head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    for line in head.decode().replace("\n ", " ").split("\n"):
        name, _, value = line.partition(":")
        message.headers.append((name, value.strip().encode()))
    message.body = bytearray(body)
    message.size = len(raw)
    return message


def test_mail_to_spam_at_domain_from_the_owner_needs_the_same_proof_as_a_reply(
        world, dns_settings, dns_server):
    """Spam@/ham@ learning follows the reply rule: the owner's mailbox alone is not
    enough; SMTP AUTH, a trusted network, SPF or DKIM must prove it."""
    path = MailPath(dns_settings, world)  # the bundled scanner learns
    unproven = path.process(_learning_mail("198.51.100.7"))
    assert unproven.status == "reject" and "authenticated" in unproven.reply[2]
    dns_server.add("real.example", "TXT", "v=spf1 ip4:198.51.100.7 -all")
    proven = path.process(_learning_mail("198.51.100.7"))
    assert proven.reply is None or "authenticated" not in proven.reply[2]
    assert proven.status == "discard"  # learned, and not sent on
    path.close()

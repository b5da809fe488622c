"""The milter's processing (lookup → scan within budget → verdict → events) with the
real bundled scanner on both engines, plus its fault paths, and the milter adapter
driven step by step (its edits decoded from the frames it would send).
The end-to-end path through a real Postfix is in test_milter_postfix.py."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from aliasd.core import aliases as core
from aliasd.core import events as mail_events
from aliasd.core import leaks
from aliasd.core.decision import Decision
from aliasd.core.replica import Replica
from aliasd.db import Database
from aliasd.listen import ListenSpec
from aliasd.milter import protocol
from aliasd.milter.adapter import AliasdMilter
from aliasd.milter.edits import ACCEPT, REJECT, MessageEdits
from aliasd.milter.processing import Envelope, MailPath
from aliasd.milter.server import open_listener
from aliasd.models import Alias, BlockRule, MailEvent
from aliasd.postfix import header_checks as hc
from aliasd.scanner import Action, ScannerError, ScanResult, Symbol
from tests.harness.net import free_port

CLEAN = (
    b"From: GitHub <noreply@github.com>\r\n"
    b"To: github.com@example.net\r\n"
    b"Subject: Your pull request\r\n"
    b"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <abc@github.com>\r\n"
    b"\r\n"
    b"Hello, it was merged.\r\n"
)


@pytest.fixture
def world(database):
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_domain(s, "bob.example", bob)
        core.create_alias(s, "github.com@example.net", alice, site="github.com")
        core.create_alias(s, "other@example.net", alice)
        core.create_alias(s, "b@bob.example", bob, site="b.example")
        s.add(
            BlockRule(
                kind="sender_domain", value="pills.example", pattern="/x/",
                reject_text="blocked", source="manual",
            )
        )  # fmt: skip
    return database


def envelope(message: bytes = CLEAN, *, sender="noreply@github.com", rcpts=None) -> Envelope:
    head, _, body = message.partition(b"\r\n\r\n")
    headers = []
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        headers.append((name.decode(), value.strip()))
    return Envelope(
        sender=sender,
        recipients=rcpts or ["github.com+x@example.net"],
        client_addr="192.0.2.1",
        helo="mail.github.com",
        queue_id="QID1",
        headers=headers,
        body=bytearray(body),
        size=len(message),
    )


def events(db) -> list[MailEvent]:
    with db.session() as s:
        return list(s.scalars(select(MailEvent).order_by(MailEvent.id)))


class FixedScanner:
    """Returns a given verdict (or raises, or sleeps): the fault and mapping paths."""

    def __init__(self, result=None, *, exc=None, delay=0.0):
        self.result, self.exc, self.delay = result, exc, delay

    def scan(self, request):
        if self.delay:
            time.sleep(self.delay)
        if self.exc:
            raise self.exc
        return self.result


def test_clean_message_with_the_real_scanner(world, settings):
    path = MailPath(settings, world)
    verdict = path.process(envelope())
    assert verdict.status == "accept" and verdict.scanned
    assert verdict.header("X-Spamd-Result")[0].startswith("default: False [")
    assert verdict.header("X-Aliasd-Alias") == ["github.com@example.net (site github.com)"]
    assert verdict.header("X-Spam") == [] and verdict.header("X-Aliasd-Scan") == []
    [ev] = events(world)
    assert (ev.alias_address, ev.queue_id, ev.from_domain, ev.subject) == (
        "github.com@example.net", "QID1", "github.com", "Your pull request",
    )  # fmt: skip
    assert ev.action == verdict.result.action.value
    path.close()


def test_blocklisted_sender_is_rejected_and_counted(world, settings):
    path = MailPath(settings, world)
    msg = CLEAN.replace(b"noreply@github.com", b"deals@pills.example")
    verdict = path.process(envelope(msg, sender="deals@pills.example"))
    assert verdict.status == "reject"
    code, xcode, text = verdict.reply
    assert (code, xcode, text) == ("550", "5.7.1", "blocked")  # the rule's own reject text
    with world.session() as s:
        alias = s.scalar(select(Alias).where(Alias.address == "github.com@example.net"))
        assert (alias.rejected_count, alias.spam_count, alias.forwarded_count) == (1, 1, 0)
        assert leaks.site_status(s, alias.owner_id, "github.com", 4).status == "leaked"
    path.close()


def test_mail_not_for_an_alias_is_left_alone(world, settings):
    path = MailPath(settings, world)
    verdict = path.process(envelope(rcpts=["postmaster@example.net", "x@elsewhere.example"]))
    assert verdict.status == "accept" and verdict.add_headers == [] and not verdict.scanned
    assert events(world) == []
    path.close()


def test_aliases_of_two_owners_are_not_named_to_each_other(world, settings):
    path = MailPath(settings, world)
    verdict = path.process(envelope(rcpts=["github.com@example.net", "b@bob.example"]))
    assert verdict.header("X-Aliasd-Alias") == []
    assert len(events(world)) == 2
    verdict = path.process(envelope(rcpts=["github.com@example.net", "other@example.net"]))
    assert verdict.header("X-Aliasd-Alias") == [
        "github.com@example.net (site github.com)",
        "other@example.net",
    ]
    path.close()


@pytest.mark.parametrize(
    ("action", "status", "code"),
    [
        (Action.SOFT_REJECT, "tempfail", "451"),
        (Action.REWRITE_SUBJECT, "accept", None),
        (Action.ADD_HEADER, "accept", None),
        (Action.GREYLIST, "accept", None),
    ],
)
def test_actions_map_to_replies_and_headers(world, settings, action, status, code):
    result = ScanResult(
        score=9.5, required_score=15.0, action=action, symbols=[Symbol("SUBJ_ALL_CAPS", 3.0)]
    )
    path = MailPath(settings, world, scanner=FixedScanner(result))
    verdict = path.process(envelope())
    assert verdict.status == status
    assert (verdict.reply[0] if verdict.reply else None) == code
    spam = action in (Action.SOFT_REJECT, Action.REWRITE_SUBJECT, Action.ADD_HEADER)
    assert verdict.header("X-Spam") == (["Yes"] if spam else [])
    expected_subject = "***SPAM*** Your pull request" if action == Action.REWRITE_SUBJECT else None
    assert verdict.new_subject == expected_subject
    assert "SUBJ_ALL_CAPS(3.00)[]" in verdict.header("X-Spamd-Result")[0]
    [ev] = events(world)
    assert ev.action == action.value and ev.is_spam == spam
    path.close()


def test_rewritten_subject_keeps_encoded_words(world, settings):
    result = ScanResult(score=9.0, required_score=15.0, action=Action.REWRITE_SUBJECT)
    path = MailPath(settings, world, scanner=FixedScanner(result))
    msg = CLEAN.replace(b"Subject: Your pull request", b"Subject: =?utf-8?q?caf=C3=A9?=")
    verdict = path.process(envelope(msg))
    assert verdict.new_subject == "***SPAM*** =?utf-8?q?caf=C3=A9?="
    [ev] = events(world)
    assert ev.subject == "café"
    # already prefixed: left alone
    verdict = path.process(envelope(msg.replace(b"Subject: ", b"Subject: ***SPAM*** ")))
    assert verdict.new_subject is None
    path.close()


def test_scanner_failure_passes_unscanned_and_records(world, settings):
    path = MailPath(settings, world, scanner=FixedScanner(exc=ScannerError("bayes: down")))
    verdict = path.process(envelope())
    assert verdict.status == "accept" and not verdict.scanned
    assert verdict.header("X-Aliasd-Scan") == ["skipped (scanner error: ScannerError)"]
    assert verdict.header("X-Spamd-Result") == []
    assert verdict.header("X-Aliasd-Alias")  # the alias is still named
    [ev] = events(world)
    assert ev.action == "skipped" and not ev.is_spam
    path.close()


def test_scan_timeout_passes_within_the_budget(world, settings):
    settings = settings.with_overrides(milter_timeout=0.3)
    path = MailPath(settings, world, scanner=FixedScanner(exc=RuntimeError("late"), delay=3))
    started = time.monotonic()
    verdict = path.process(envelope())
    assert time.monotonic() - started < 2.0
    assert verdict.status == "accept"
    assert verdict.header("X-Aliasd-Scan") == ["skipped (timeout after 0.3s)"]
    path.close()


def test_database_down_passes_unscanned(settings):
    dead = Database(f"postgresql+psycopg://aliasd@127.0.0.1:{free_port()}/aliasd", timeout=1)
    path = MailPath(settings.with_overrides(database_url=dead.url), dead)
    verdict = path.process(envelope())
    assert verdict.status == "accept"
    assert verdict.header("X-Aliasd-Scan") == ["skipped (database unavailable)"]
    path.close()
    dead.dispose()


# --- the adapter ------------------------------------------------------------------------
class RecordedEdits(MessageEdits):
    """Edits as Postfix would read them: the frames decoded back."""

    def __init__(self):
        super().__init__(0xFFFF)

    def _decoded(self):
        for raw in self.frames:
            code, data = raw[4:5], raw[5:]
            if code in (protocol.SMFIR_CHGHEADER, protocol.SMFIR_INSHEADER):
                index = int.from_bytes(data[:4], "big")
                name, value = protocol.strings(data[4:])
                yield code, (name.decode(), index, value.decode())
            elif code == protocol.SMFIR_ADDHEADER:
                name, value = protocol.strings(data)
                yield code, (name.decode(), value.decode())

    @property
    def added(self):
        return [v for c, v in self._decoded() if c == protocol.SMFIR_ADDHEADER]

    @property
    def changed(self):
        return [v for c, v in self._decoded() if c == protocol.SMFIR_CHGHEADER]


def drive(settings, db, headers: list[tuple[str, bytes]], body_chunks: list[bytes], scanner=None):
    mailpath = MailPath(settings, db, scanner=scanner)
    m = AliasdMilter(mailpath)
    edits = RecordedEdits()
    m.connect("192.0.2.5")
    m.hello("client.example")
    m.envfrom(b"<x@spam\xff.example>")
    m.envrcpt(b"<GitHub.com@example.net>")
    for name, value in headers:
        m.header(name.encode(), value)
    m.eoh()
    for chunk in body_chunks:
        m.body(chunk)
    rc = m.eom("QADAPT", edits)
    mailpath.close()
    return m, edits, rc


def test_adapter_applies_verdict_and_strips_forged_headers(world, settings):
    result = ScanResult(score=9.0, required_score=15.0, action=Action.REWRITE_SUBJECT)
    headers = [
        ("From", b"a@bulk.example"),
        ("X-Spam", b"No"),
        ("Subject", b"hello"),
        ("x-spam", b"no again"),
        ("X-Aliasd-Alias", b"forged"),
    ]
    m, edits, rc = drive(settings, world, headers, [b"body\r\n"], FixedScanner(result))
    assert rc == ACCEPT
    assert ("X-Spam", 2, "") in edits.changed and ("X-Spam", 1, "") in edits.changed
    assert edits.changed.index(("X-Spam", 2, "")) < edits.changed.index(("X-Spam", 1, ""))
    assert ("X-Aliasd-Alias", 1, "") in edits.changed
    assert ("Subject", 1, "***SPAM*** hello") in edits.changed
    assert ("X-Spam", "Yes") in edits.added
    assert ("X-Aliasd-Alias", "github.com@example.net (site github.com)") in edits.added
    [ev] = events(world)
    assert ev.queue_id == "QADAPT" and ev.client_addr == "192.0.2.5"
    assert ev.helo == "client.example" and ev.envelope_sender.startswith("x@spam")


def test_adapter_rejects_with_text(world, settings):
    result = ScanResult(score=20.0, required_score=15.0, action=Action.REJECT)
    m, edits, rc = drive(settings, world, [("Subject", b"x")], [b"b"], FixedScanner(result))
    assert rc == REJECT
    assert edits.encode(rc) == protocol.frame(
        protocol.SMFIR_REPLYCODE, b"550 5.7.1 Message rejected as spam (score 20.00 / 15.00)\0")


def test_adapter_survives_junk_and_truncates_big_messages(world, settings):
    """Binary junk, a huge header, broken MIME and a body over max_scan_size, all
    through the real scanner: the message passes, scanned in part, and says so."""
    settings = settings.with_overrides(max_scan_size=20_000)
    headers = [
        ("From", b"\xff\xfe\x00junk <@@>"),
        ("Subject", b"=?utf-8?b?!!!not base64?= \x80\x81"),
        ("Content-Type", b'multipart/mixed; boundary="never-closed"'),
        ("X-Huge", b"A" * 15_000),
        ("X-Binary", bytes(range(256)) * 10),
    ]
    body = [b"--never-closed\r\nContent-Type: text/plain\r\n\r\n\x00\x01\xff junk\r\n" * 50] + [
        b"Z" * 65_536
    ] * 3
    m, edits, rc = drive(settings, world, headers, body)
    assert rc == ACCEPT
    added = dict(edits.added)
    assert added["X-Spamd-Result"].startswith("default: ")
    scan = added["X-Aliasd-Scan"]
    assert scan.startswith("truncated (scanned the first 20000 of ")
    total = int(scan.split(" of ")[1].split()[0])
    assert total > 3 * 65_536
    assert len(m.env.raw_message()) <= 20_000 + 4096
    [ev] = events(world)
    assert ev.size == total


def test_listen_specs_and_the_listening_sockets(tmp_path):
    import os
    import socket
    import stat

    assert ListenSpec.parse("127.0.0.1:10033") == ListenSpec(host="127.0.0.1", port=10033)
    assert ListenSpec.parse("[::1]:25") == ListenSpec(host="::1", port=25)
    assert ListenSpec.parse("unix:/run/aliasd/milter.sock").path == "/run/aliasd/milter.sock"
    for bad in ("localhost", "unix:relative", "1.2.3.4:99999", ":25"):
        with pytest.raises(ValueError):
            ListenSpec.parse(bad)
    # TCP: accepted sockets inherit TCP_NODELAY (small replies never wait for an ACK)
    listener = open_listener(ListenSpec(host="127.0.0.1", port=free_port()))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    listener.setblocking(True)
    accepted, _ = listener.accept()
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    for s in (accepted, client, listener):
        s.close()
    # unix: a stale socket file is replaced, and Postfix's user may connect
    path = tmp_path / "milter.sock"
    path.write_text("stale")
    listener = open_listener(ListenSpec(path=str(path)))
    assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o666
    listener.close()


def test_postfix_config_documents_the_milter_and_its_default_action(tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "ALIASD_DATA_DIR": str(tmp_path),
           "ALIASD_MILTER_LISTEN": "unix:/var/spool/postfix/aliasd/milter"}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "aliasd", "postfix-config"], env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("# --- aliasd milter ---", 1)[1].split("# ---", 1)[0]
    # inside Postfix's queue directory (its chroot): named relative to it
    assert "smtpd_milters = unix:aliasd/milter\n" in section
    # Postfix's own bounces reach the same milter, so that they name the alias
    assert "\nnon_smtpd_milters = unix:aliasd/milter\n" in section
    assert "internal_mail_filter_classes = bounce\n" in section
    assert "milter_default_action = accept\n" in section
    assert "milter_protocol = 6\n" in section


def test_a_blocked_sender_is_rejected_whatever_the_score(world, settings):
    """A block is a decision: BLOCKLISTED 15.00 + MIME_GOOD -0.10 = 14.90 once fell under
    the reject threshold and the blocked sender's mail went through."""
    import dataclasses

    lenient = dataclasses.replace(settings, action_reject=50.0)
    path = MailPath(lenient, world)
    msg = CLEAN.replace(b"noreply@github.com", b"deals@pills.example")
    verdict = path.process(envelope(msg, sender="deals@pills.example"))
    assert verdict.result.score < 50.0 and "BLOCKLISTED" in verdict.result.symbol_names()
    assert verdict.status == "reject" and verdict.reply == ("550", "5.7.1", "blocked")
    path.close()
    # a scanner that knows nothing of blocks (think rspamd) changes nothing
    clean = ScanResult(score=-2.0, required_score=15.0, action=Action.NO_ACTION)
    path = MailPath(settings, world, scanner=FixedScanner(clean))
    verdict = path.process(envelope(msg, sender="bounce@esp.example"))  # the From: is blocked
    assert verdict.status == "reject" and verdict.reply == ("550", "5.7.1", "blocked")
    [_, ev] = events(world)
    assert ev.action == "reject" and "SENDER_BLOCKED(0.00)[server" in ev.symbols
    path.close()


def test_a_recipients_own_block_refuses_their_copy_only(world, settings):
    from aliasd.core import sender_blocks
    from aliasd.core.block_decision import USER_REJECT_TEXT
    from aliasd.models import SenderBlock

    with world.session() as s:
        alice = core.get_user(s, "alice")
        block_id = sender_blocks.add_block(s, alice.id, "spammer.example").id
    path = MailPath(settings, world)
    msg = CLEAN.replace(b"noreply@github.com", b"x@spammer.example")
    # every recipient has blocked the sender: the message is refused
    both = envelope(msg, sender="x@spammer.example",
                    rcpts=["github.com+x@example.net", "other@example.net"])
    verdict = path.process(both)
    assert verdict.status == "reject" and verdict.reply == ("550", "5.7.1", USER_REJECT_TEXT)
    # alice's alias and bob's: bob gets it, alice's copy is dropped
    mixed = envelope(msg, sender="x@spammer.example", rcpts=["GitHub.com+x@example.net", "b@bob.example"])
    verdict = path.process(mixed)
    assert verdict.status == "accept" and verdict.remove_recipients == ["GitHub.com+x@example.net"]
    evs = [(e.alias_address, e.action) for e in events(world)]
    assert evs == [("github.com@example.net", "reject"), ("other@example.net", "reject"),
                   ("b@bob.example", "no action"), ("github.com@example.net", "reject")]
    with world.session() as s:
        alias = s.scalar(select(Alias).where(Alias.address == "github.com@example.net"))
        assert (alias.rejected_count, alias.forwarded_count) == (2, 0)
        bobs = s.scalar(select(Alias).where(Alias.address == "b@bob.example"))
        assert (bobs.rejected_count, bobs.forwarded_count) == (0, 1)
        assert s.get(SenderBlock, block_id).hits == 2
    path.close()


MESSAGE_HEADERS = [
    (b"From", b"Shop <news@shop.example>"),
    (b"To", b"info+shop@example.net"),
    (b"Subject", b"Offers"),
    (b"Date", b"Wed, 25 Nov 2026 10:00:00 +0000"),
    (b"Message-ID", b"<1@shop.example>"),
]


def test_milter_attributes_mail_to_the_alias_postfix_delivered_to(database, settings):
    """An alias whose address contains the delimiter (imported from a Postfix virtual
    file: ``info+shop@…``) is what lookupd answers for that exact address; the milter must
    record the mail against that alias and its owner, not against ``info@…`` of someone
    else."""
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "info@example.net", alice)
        core.create_alias(s, "info+shop@example.net", bob, site="shop.example")
    replica = Replica(database)
    replica.sync()
    assert replica.decide("info+shop@example.net") == Decision.found("bob@real.example")

    path = MailPath(settings, database)
    try:
        verdict = path.process(
            Envelope(
                sender="news@shop.example",
                recipients=["Info+Shop@example.net"],
                client_addr="192.0.2.1",
                helo="mail.shop.example",
                queue_id="QID7",
                headers=[(n.decode(), v) for n, v in MESSAGE_HEADERS],
                body=bytearray(b"Hello\r\n"),
                size=200,
            )
        )
    finally:
        path.close()
    assert verdict.header("X-Aliasd-Alias") == ["info+shop@example.net (site shop.example)"]
    with database.session() as s:
        [event] = s.scalars(select(MailEvent)).all()
        assert (event.alias_address, event.owner_id) == ("info+shop@example.net", bob.id)


def test_concurrent_auto_blocks_add_one_rule_per_domain(database, settings):
    """Several milter threads/processes reach the auto-block threshold for one sender
    domain at the same moment: one rule, not one per writer (duplicates would each need
    disabling and fill header_checks)."""
    st = settings.with_overrides(autoblock_threshold=3, blocklist_reload_command="")
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "shop.example@example.net", alice, site="shop.example")
    with database.session() as s:
        targets = mail_events.find_aliases(s, ["shop.example@example.net"], "+")
    facts = mail_events.MessageFacts(envelope_sender="x@massnews.gr", subject="pills")
    outcome = mail_events.AppliedVerdict(score=9.0, action="add header", is_spam=True)
    ids: list[int] = []
    for _ in range(8):
        with database.session() as s:
            ids += mail_events.record_message(s, targets, facts, outcome)
    barrier = threading.Barrier(len(ids))

    def hook(event_id: int) -> None:
        barrier.wait()
        mail_events.run_spam_hook(database, st, [event_id])

    threads = [threading.Thread(target=hook, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(BlockRule)) == 1
    hc.wait_for_sync(st)


def test_auto_block_never_blocks_another_users_mailbox_domain(database, settings):
    """A block is server-wide. Spam forging ``From: …@bobcorp.example`` to alice's aliases
    must not cut off bob's own mail domain (his mail to his aliases, and his mail through
    this server), just as alice's own mailbox domain is protected."""
    st = settings.with_overrides(autoblock_threshold=3, blocklist_reload_command="")
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_user(s, "bob", "bob@bobcorp.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "shop.example@example.net", alice, site="shop.example")
    with database.session() as s:
        targets = mail_events.find_aliases(s, ["shop.example@example.net"], "+")
    facts = mail_events.MessageFacts(
        envelope_sender="x@spam.example", from_domain="bobcorp.example", subject="pills"
    )
    outcome = mail_events.AppliedVerdict(score=9.0, action="add header", is_spam=True)
    for _ in range(4):
        mail_events.record_and_notify(database, st, targets, facts, outcome)
    hc.wait_for_sync(st)
    with database.session() as s:
        assert s.scalars(select(BlockRule.value)).all() == ["spam.example"]


def test_alias_header_is_not_shown_to_recipients_that_are_not_aliases(database, settings):
    """One message reaches every recipient with the same headers. Mail to alice's alias
    (perhaps as Bcc) and to a mailbox that is not an alias must not tell that mailbox
    which alias of alice's it was sent to; mail to her aliases only still names them."""
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "shop.example@example.net", alice, site="shop.example")
    path = MailPath(settings, database)

    def run(rcpts: list[str]):
        return path.process(
            Envelope(
                sender="news@shop.example", recipients=rcpts, client_addr="192.0.2.1",
                helo="mail.shop.example", queue_id="Q",
                headers=[(n.decode(), v) for n, v in MESSAGE_HEADERS],
                body=bytearray(b"Hello\r\n"), size=200,
            )
        )  # fmt: skip

    try:
        mixed = run(["carol@other.example", "shop.example+x@example.net"])
        only = run(["Shop.Example@example.net", "shop.example+y@example.net"])
    finally:
        path.close()
    assert mixed.header("X-Aliasd-Alias") == []
    assert mixed.scanned and mixed.header("X-Spamd-Result")  # still scanned and recorded
    assert only.header("X-Aliasd-Alias") == ["shop.example@example.net (site shop.example)"]
    with database.session() as s:
        assert len(s.scalars(select(MailEvent)).all()) == 2

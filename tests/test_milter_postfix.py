"""End to end: swaks → a real Postfix smtpd with aliasd's lookup map and the real
``aliasd milter`` (bundled scanner) → relayed to a capture SMTP server. One Postfix and
one milter per engine (SQLite, PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.core import leaks
from aliasd.models import Alias, BlockRule, MailEvent, SiteDay
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


class World:
    def __init__(self, db, settings, postfix, capture, milter, base, env):
        self.db, self.settings, self.postfix, self.capture = db, settings, postfix, capture
        self.milter, self.base, self.env = milter, base, env

    def events(self, *, wait: float = 5.0, **where) -> list[MailEvent]:
        """The events matching ``where``; the milter commits them just after answering
        Postfix, so this waits up to ``wait`` seconds for the first to appear."""
        deadline = time.monotonic() + wait
        query = select(MailEvent).order_by(MailEvent.id)
        for key, value in where.items():
            query = query.where(getattr(MailEvent, key) == value)
        while True:
            with self.db.session() as s:
                rows = list(s.scalars(query))
            if rows or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def alias(self) -> Alias:
        with self.db.session() as s:
            return s.scalar(select(Alias).where(Alias.address == ALIAS))

    def send(self, **kwargs) -> subprocess.CompletedProcess:
        return swaks(self.postfix.smtp_port, **kwargs)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def world(request, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"mailpath-{request.param}")
    db = open_clean_database(request.param, base, request)
    with db.session() as s:
        alice = core.create_user(s, "alice", MAILBOX)
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, ALIAS, alice, site="github.com")
        core.create_alias(s, "shop.example@example.net", alice, site="shop.example")
        s.add(
            BlockRule(
                kind="sender_domain",
                value="pills.example",
                pattern="/^From:.*@pills\\.example/",
                reject_text="blocked",
                source="manual",
            )
        )
    settings = load_settings(
        environ={},
        data_dir=str(base / "data"),
        database_url=db.url,
        env="development",
        secret_key="test",
        milter_listen=f"127.0.0.1:{free_port()}",
    )
    env = settings_env(settings)
    env["ALIASD_MILTER_LISTEN"] = settings.milter_listen
    env["ALIASD_MAX_SCAN_SIZE"] = "50000"
    # the auto-block hook may rewrite header_checks: never reload the system Postfix
    env["ALIASD_BLOCKLIST_RELOAD_COMMAND"] = "true"
    # Postfix runs as user postfix and must traverse its directory; pytest keeps its
    # own tmp root at 0700 (and resets it when other pytest runs start), so use /tmp.
    pf_dir = Path(tempfile.mkdtemp(prefix="aliasd-milter-pf-", dir="/tmp"))
    os.chmod(pf_dir, 0o755)
    # Three milters start side by side: the main one, one on a unix socket, and one
    # whose database is unreachable; each has its own smtpd port (no reloads needed).
    unix_sock = pf_dir / "milter.sock"
    dead_listen = f"127.0.0.1:{free_port()}"
    dead_env = dict(
        env,
        ALIASD_DATABASE_URL=f"postgresql+psycopg://aliasd@127.0.0.1:{free_port()}/aliasd",
        ALIASD_DB_TIMEOUT="1",
    )
    milter_cmd = [sys.executable, "-m", "aliasd", "milter"]
    milter = start_logged(milter_cmd, env, base / "milter.log")
    # the unix-socket milter runs in one process (--workers 1), the others one per CPU
    unix_milter = start_logged([*milter_cmd, "--listen", f"unix:{unix_sock}", "--workers", "1"],
                               env, base / "unix.log")
    dead_milter = start_logged([*milter_cmd, "--listen", dead_listen], dead_env, base / "dead.log")
    lookup_port = free_port()
    lookupd = start_logged(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{lookup_port}",
         "--tcp", ""],
        env,
        base / "lookupd.log",
    )  # fmt: skip
    table = postfix_table("socketmap", f"127.0.0.1:{lookup_port}", "virtual")
    capture = CaptureServer()
    capture.start()
    main_cf = {
        "virtual_alias_domains": table,
        "virtual_alias_maps": table,
        "recipient_delimiter": "+",
        # the tests play a client from elsewhere with XCLIENT (address and name)
        "smtpd_authorized_xclient_hosts": "127.0.0.1",
        **postfix_milter_settings(settings),
    }
    postfix = PostfixInstance(pf_dir / "pf", relay_port=capture.port, main_cf=main_cf)
    ports = {"unix": free_port(), "dead": free_port()}
    milters = {"unix": f"unix:{unix_sock}", "dead": f"inet:{dead_listen}"}
    with open(postfix.config_dir / "master.cf", "a") as master:
        for name, port in ports.items():
            master.write(f"127.0.0.1:{port} inet n - n - - smtpd -o smtpd_milters={milters[name]}\n")
    wait_for_port(lookup_port)
    for listen in (settings.milter_listen, dead_listen, f"unix:{unix_sock}"):
        wait_for_milter(listen)
    postfix.start()
    w = World(db, settings, postfix, capture, milter, base, env)
    w.ports = ports
    w.lookup_port = lookup_port
    w.unix_sock = unix_sock
    yield w
    procs = [milter, unix_milter, dead_milter, lookupd]
    for proc in procs:  # stop them together, each finishes its messages in flight
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    postfix.stop()
    capture.stop()
    for proc in procs:
        stop_process(proc)
    shutil.rmtree(pf_dir, ignore_errors=True)
    db.dispose()


def _captured(world: World, marker: str):
    return world.capture.wait_for(lambda m: marker in m.text)


def test_clean_message_arrives_with_headers_and_is_recorded(world):
    marker = f"clean-{time.monotonic_ns()}"
    proc = world.send(
        to="GitHub.com+News@example.net",
        sender="noreply@github.com",
        header={"From": "GitHub <noreply@github.com>", "Subject": f"Your pull request {marker}"},
        body="Hello, your pull request was merged.",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    msg = _captured(world, marker)
    assert msg.rcpt_tos == [MAILBOX]
    result = msg.header("X-Spamd-Result")
    assert result and result.startswith("default: False [")
    assert "MIME_GOOD" in result
    assert msg.header("X-Aliasd-Alias") == f"{ALIAS} (site github.com)"
    assert msg.header("X-Spam") is None
    assert msg.header("X-Aliasd-Scan") is None

    [event] = world.events(subject=f"Your pull request {marker}")
    assert event.alias_address == ALIAS and event.envelope_sender == "noreply@github.com"
    assert event.from_domain == "github.com" and event.related_sender
    assert event.client_addr == "127.0.0.1" and event.helo == "sender.example"
    assert event.action == "no action" and not event.is_spam
    assert event.queue_id and event.queue_id in world.postfix.maillog()
    assert event.size > 100 and "MIME_GOOD" in event.symbols
    alias = world.alias()
    assert alias.forwarded_count >= 1 and alias.last_mail_at is not None


def test_a_client_without_reverse_dns_counts_against_the_message(world):
    """Postfix names a client "unknown" when its address has no verified reverse-DNS
    name: the milter hears that and the scanner adds RDNS_NONE; a named client does not
    get it, nor does one whose lookup failed for now (Postfix names it "unknown" too;
    the milter asks for {client_resolve}, which says TEMP). (XCLIENT plays a client from
    a public address, as from elsewhere.)"""
    results = {}
    for name in ("[UNAVAILABLE]", "mail.shop-sender.example", "[TEMPUNAVAIL]"):
        marker = f"rdns-{time.monotonic_ns()}"
        proc = world.send(to=ALIAS, sender="news@shop.example",
                          header={"From": "news@shop.example", "Subject": f"Newsletter {marker}"},
                          extra=["--xclient-addr", "83.12.44.9", "--xclient-name", name])  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results[name] = _captured(world, marker).header("X-Spamd-Result")
        [event] = world.events(subject=f"Newsletter {marker}")
        assert event.client_addr == "83.12.44.9"
    assert "RDNS_NONE(1.00)[83.12.44.9]" in results["[UNAVAILABLE]"]
    assert "RDNS_NONE" not in results["mail.shop-sender.example"]
    assert "RDNS_NONE" not in results["[TEMPUNAVAIL]"]


def test_blocklisted_spam_is_rejected_with_text_and_counted(world):
    before = world.alias()
    marker = f"spam-{time.monotonic_ns()}"
    proc = world.send(
        to=ALIAS,
        sender="deals@pills.example",
        header={"From": "deals@pills.example", "Subject": f"cheap {marker}"},
    )
    assert proc.returncode != 0
    assert "550 5.7.1 blocked" in proc.stdout, proc.stdout  # the rule's own reject text
    [event] = world.events(subject=f"cheap {marker}")
    assert event.action == "reject" and event.is_spam and not event.related_sender
    assert "BLOCKLISTED(15.00)[pills.example]" in event.symbols
    after = world.alias()
    assert after.rejected_count == before.rejected_count + 1
    assert after.spam_count == before.spam_count + 1
    assert after.forwarded_count == before.forwarded_count
    with world.db.session() as s:
        assert leaks.site_status(s, after.owner_id, "github.com", 4).status == "leaked"
    with world.db.session() as s:
        day = s.scalar(select(SiteDay).where(SiteDay.site == "github.com"))
        assert day.spam >= 1 and day.unrelated >= 1
    assert not any(marker in m.text for m in world.capture.messages)


def test_spammy_message_gets_subject_rewritten_and_spam_flag(world):
    marker = f"rw{time.monotonic_ns()}"
    proc = world.send(
        to="shop.example@example.net",
        sender="promo@bulk.example",
        header={
            "From": "promo@bulk.example",
            "To": "undisclosed-recipients:;",
            "Subject": "BUY CHEAP WATCHES TODAY ONLY",
            "X-Marker": marker,
            "Content-Type": "text/html",
            # forged copies of aliasd's headers must not survive
            "X-Spam": "No",
            "X-Aliasd-Alias": "forged@example.net",
        },
        body='<html><a href="http://192.0.2.9/buy">buy</a></html>',
    )
    assert proc.returncode == 0, proc.stdout
    msg = _captured(world, marker)
    assert msg.header("Subject") == "***SPAM*** BUY CHEAP WATCHES TODAY ONLY"
    assert msg.header("X-Spam") == "Yes"
    import email

    parsed = email.message_from_bytes(msg.data)
    assert parsed.get_all("X-Spam") == ["Yes"]
    assert parsed.get_all("X-Aliasd-Alias") == ["shop.example@example.net (site shop.example)"]
    assert "ALIAS_SITE_MISMATCH" in msg.header("X-Spamd-Result")
    [event] = world.events(envelope_sender="promo@bulk.example")
    assert event.action == "rewrite subject" and event.is_spam and event.score >= 8


def test_database_down_passes_mail_marked_unscanned(world):
    """A milter whose database is unreachable lets mail through, saying so."""
    marker = f"dbdown-{time.monotonic_ns()}"
    sent = swaks(world.ports["dead"], to=ALIAS, header={"Subject": marker})
    assert sent.returncode == 0, sent.stdout
    msg = _captured(world, marker)
    assert msg.header("X-Aliasd-Scan") == "skipped (database unavailable)"
    assert msg.header("X-Spamd-Result") is None


def test_unix_socket_milter(world):
    """``--listen unix:/path``: a socket Postfix (user postfix) can use."""
    assert world.unix_sock.stat().st_mode & 0o777 == 0o666
    marker = f"unix-{time.monotonic_ns()}"
    sent = swaks(world.ports["unix"], to=ALIAS, sender="noreply@github.com",
                 header={"Subject": marker})  # fmt: skip
    assert sent.returncode == 0, sent.stdout
    msg = _captured(world, marker)
    assert msg.header("X-Aliasd-Alias") == f"{ALIAS} (site github.com)"
    assert msg.header("X-Spamd-Result").startswith("default: False [")
    [event] = world.events(subject=marker)
    assert event.action == "no action"


def test_junk_and_oversized_messages_pass_and_the_milter_lives_on(world):
    """Binary junk, broken MIME, a huge header and a body over max_scan_size (50000
    here) go through the real milter and scanner: delivered, marked, milter alive."""
    marker = f"junk{time.monotonic_ns()}"
    junk = (
        b"From: \xff\xfe junk <@@@>\r\n"
        b"Subject: =?utf-8?b?!!!?= \x80\x81 " + marker.encode() + b"\r\n"
        b"Content-Type: multipart/mixed; boundary=\"open\"\r\n"
        b"X-Huge: " + b"A" * 30_000 + b"\r\n"
        b"\r\n--open\r\nContent-Type: text/html\r\n\r\n\x01\x02\xff<b>junk\r\n"
        + (b"Z" * 900 + b"\r\n") * 200
    )
    with smtplib.SMTP("127.0.0.1", world.postfix.smtp_port, timeout=30) as smtp:
        smtp.sendmail("junk@junk.example", [ALIAS], junk)
    msg = _captured(world, marker)
    assert msg.header("X-Spamd-Result").startswith("default: ")
    scan = msg.header("X-Aliasd-Scan")
    assert scan.startswith("truncated (scanned the first 50000 of "), scan
    assert world.milter.poll() is None
    [event] = world.events(envelope_sender="junk@junk.example")
    assert event.size > 200_000


def test_bobs_block_of_gmail_refuses_bobs_mail_not_alices(world):
    """A user's block applies to that user's aliases only: enforced by the milter, never
    by Postfix's sender_access map or header_checks (which would refuse it for all)."""
    from aliasd.core import sender_blocks
    from aliasd.core.block_decision import USER_REJECT_TEXT

    with world.db.session() as s:
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "bob.example", bob)
        core.create_alias(s, "news@bob.example", bob, site="news.example")
        sender_blocks.add_block(s, bob.id, "gmail.com")
    time.sleep(3)  # the milter re-reads blocks every 2 s, lookupd its replica faster
    status, _out, err = postmap_query(
        "friend@gmail.com", postfix_table("socketmap", f"127.0.0.1:{world.lookup_port}", "sender_access"))
    assert status == 1, err  # MAIL FROM is not refused for anyone
    mail = {"sender": "friend@gmail.com", "body": "Lunch tomorrow?"}

    marker = f"alice-{time.monotonic_ns()}"
    proc = world.send(to=ALIAS, header={"From": "friend@gmail.com", "Subject": marker}, **mail)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _captured(world, marker).rcpt_tos == [MAILBOX]

    marker = f"bob-{time.monotonic_ns()}"
    proc = world.send(to="news@bob.example", header={"From": "friend@gmail.com", "Subject": marker},
                      **mail)
    assert proc.returncode != 0
    assert f"550 5.7.1 {USER_REJECT_TEXT}" in proc.stdout, proc.stdout
    [event] = world.events(subject=marker)
    assert event.alias_address == "news@bob.example" and event.action == "reject"

    # one message to both: alice's copy arrives, bob's is dropped and counted
    marker = f"both-{time.monotonic_ns()}"
    proc = world.send(to=[ALIAS, "news@bob.example"],
                      header={"From": "friend@gmail.com", "Subject": marker}, **mail)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _captured(world, marker).rcpt_tos == [MAILBOX]
    time.sleep(1)
    assert [m.rcpt_tos for m in world.capture.messages if marker in m.text] == [[MAILBOX]]
    events = {e.alias_address: e.action for e in world.events(subject=marker)}
    assert events["news@bob.example"] == "reject" and events[ALIAS] != "reject"
    with world.db.session() as s:
        bobs = s.scalar(select(Alias).where(Alias.address == "news@bob.example"))
        assert (bobs.rejected_count, bobs.forwarded_count) == (2, 0)


def _milter_client(world: World):
    import socket

    host, port = world.settings.milter_listen.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _closed_by_milter(sock) -> bool:
    """True when the milter ends the connection (EOF or reset) within the timeout."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_malformed_milter_frames_end_that_connection_and_no_other(world):
    """Garbage on the milter port (a huge length, an empty frame, an unknown command, a
    frame cut off by a disconnect) closes that connection; the milter lives on and the
    next message from Postfix is scanned."""
    from aliasd.milter import protocol

    offer = protocol.frame(b"O", (6).to_bytes(4, "big") + (0x1FF).to_bytes(4, "big")
                           + (0x1FFFFF).to_bytes(4, "big"))
    sock = _milter_client(world)
    sock.sendall(offer)
    reply = sock.recv(17)
    assert reply[4:5] == b"O" and int.from_bytes(reply[5:9], "big") == 6
    granted = int.from_bytes(reply[13:17], "big")
    assert granted & protocol.SMFIP_NR_HDR and not granted & protocol.SMFIP_NR_DATA
    sock.sendall(b"\xff\xff\xff\xffB")  # 4 GB claimed
    assert _closed_by_milter(sock)
    sock.close()
    for garbage in (b"\0\0\0\0", offer + protocol.frame(b"Z", b"junk"),
                    offer + protocol.frame(b"C", b"no family")):
        sock = _milter_client(world)
        sock.sendall(garbage)
        assert _closed_by_milter(sock), garbage
        sock.close()
    sock = _milter_client(world)
    sock.sendall(offer + (100).to_bytes(4, "big") + b"L" + b"Subject\0")  # then gone
    sock.close()
    marker = f"after-garbage-{time.monotonic_ns()}"
    sent = world.send(to=ALIAS, sender="noreply@github.com", header={"Subject": marker})
    assert sent.returncode == 0, sent.stdout
    assert _captured(world, marker).header("X-Spamd-Result").startswith("default: ")
    log = (world.base / "milter.log").read_text()
    assert "malformed frame: frame of 4294967295 bytes" in log
    assert "malformed b'Z' command: unknown command" in log


def _workers(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(p) for p in task.read_text().split()]
    return found


def test_a_crashed_worker_is_replaced_and_mail_is_still_scanned(world):
    """The milter's workers share one socket; one that dies (here SIGKILL, as a crash
    would) is replaced by the supervisor and every message is still scanned."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: the milter runs a single process")
    deadline = time.monotonic() + 10  # a worker an earlier test's mail took down may be starting again
    while len(workers := _workers(world.milter.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(workers) >= 2, workers
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        now = _workers(world.milter.pid)
        if len(now) == len(workers) and workers[0] not in now:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"worker not replaced: {workers} -> {_workers(world.milter.pid)}")
    assert world.milter.poll() is None
    for i in range(6):  # several connections: each worker gets some
        marker = f"respawn-{i}-{time.monotonic_ns()}"
        sent = world.send(to=ALIAS, sender="noreply@github.com", header={"Subject": marker})
        assert sent.returncode == 0, sent.stdout
        assert _captured(world, marker).header("X-Spamd-Result").startswith("default: ")
    assert "ended (signal 9); starting another" in (world.base / "milter.log").read_text()


def test_milter_stopped_default_action_accepts(world):
    """Last in the module: stop the milter; milter_default_action = accept delivers."""
    assert world.postfix.postconf_value("milter_default_action") == "accept"
    world.milter.kill()  # down hard, as after a crash
    world.milter.wait()
    marker = f"down-{time.monotonic_ns()}"
    proc = world.send(to=ALIAS, header={"Subject": marker})
    assert proc.returncode == 0, proc.stdout
    msg = _captured(world, marker)
    assert msg.rcpt_tos == [MAILBOX]
    assert msg.header("X-Spamd-Result") is None and msg.header("X-Aliasd-Alias") is None
    assert world.events(subject=marker, wait=1.0) == []

"""A private world for the quarantine and learning tests: a real Postfix (private
instance) with aliasd's lookup server and milter, a capture SMTP server, and the web
app on a real HTTP server at the address the one-click links name; ``quarantine_score
= 5`` and direct release (the tests run as root, as postsuper wants)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from werkzeug.serving import make_server

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.models import User
from tests.harness.cli import run_cli_in_process, settings_env
from tests.harness.databases import open_clean_database
from tests.harness.net import free_port, wait_for_milter, wait_for_port
from tests.harness.postfix import CaptureServer, PostfixInstance, swaks
from tests.harness.processes import start_logged, stop_process
from tests.harness.webapp import add_user, make_app

ALIAS = "github.com@example.net"
MAILBOX = "alice@mailbox.example"  # tests.harness.webapp.add_user's


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


@contextlib.contextmanager
def running_world(request, tmp_path_factory, engine: str, dns_resolver: str = ""
                  ) -> Iterator[World]:
    """``dns_resolver``: the tests' own DNS server (``host:port``) for SPF and DKIM."""
    base = tmp_path_factory.mktemp(f"quarantine-{engine}")
    db = open_clean_database(engine, base, request)
    alice = add_user(db, "alice", domain="example.net")
    add_user(db, "bob", domain="bob.example")
    with db.session() as s:
        core.create_alias(s, ALIAS, s.get(User, alice), site="github.com")
        core.create_alias(s, "shop.example@example.net", s.get(User, alice), site="shop.example")
    web_port = free_port()
    base_url = f"http://127.0.0.1:{web_port}"
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
        "recipient_delimiter": "+", **postfix_milter_settings(settings),
        # tests may play a client from elsewhere with XCLIENT
        "smtpd_authorized_xclient_hosts": "127.0.0.1"})
    env = settings_env(settings)
    env.update(
        ALIASD_MILTER_LISTEN=settings.milter_listen,
        ALIASD_BLOCKLIST_RELOAD_COMMAND="true",
        ALIASD_QUARANTINE_SCORE="5",
        # Tests teach the filter (delete --learn-spam): what they hold must stay under reject.
        ALIASD_ACTION_REJECT="100",
        # Several tests hold spam from one sender: auto-block (5 within a day) would then
        # refuse the next one as soon as a milter worker re-reads the block list.
        ALIASD_AUTOBLOCK_ENABLED="false",
        ALIASD_REPLY_TRUSTED_NETWORKS="127.0.0.0/8",  # the owner submits on this host
        ALIASD_POSTFIX_CONFIG_DIR=str(postfix.config_dir),
        ALIASD_WEB_BASE_URL=base_url,
        ALIASD_QUARANTINE_RELEASE_MODE="direct",  # the tests run as root, as postsuper wants
    )
    if dns_resolver:
        env["ALIASD_DNS_RESOLVER"] = dns_resolver
    milter = start_logged([sys.executable, "-m", "aliasd", "milter"], env, base / "milter.log")
    lookupd = start_logged(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{lookup_port}",
         "--tcp", ""], env, base / "lookupd.log")  # fmt: skip
    wait_for_port(lookup_port)
    wait_for_milter(settings.milter_listen)
    postfix.start()
    world = World(db, load_settings(environ=env), env, postfix, capture)
    # The web app on the port the one-click links name, driving the same Postfix.
    world.base_url = base_url
    world.app = make_app(world.settings)
    server = make_server("127.0.0.1", web_port, world.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield world
    server.shutdown()
    for proc in (milter, lookupd):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    postfix.stop()
    capture.stop()
    for proc in (milter, lookupd):
        stop_process(proc)
    shutil.rmtree(pf_dir, ignore_errors=True)
    db.dispose()


def send_suspicious(world: World, marker: str) -> subprocess.CompletedProcess:
    # Capitals in the subject, undisclosed recipients, X-Priority 1, a sender unrelated
    # to the alias's site: about 8 points, between quarantine (5) and reject (15).
    return swaks(
        world.postfix.smtp_port, to=ALIAS, sender="offers@deals.example",
        header={"From": "offers@deals.example", "To": "undisclosed-recipients:;",
                "Subject": f"CHEAP WATCHES TODAY {marker.upper()}", "X-Priority": "1"},
        body=f"Original body line {marker}\nBest regards.",
    )  # fmt: skip


def wait(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.1)


def learned_ham(world: World) -> int:
    proc = world.cli("stat")
    assert proc.returncode == 0, proc.stderr
    return int(re.search(r"BAYES_HAM type: \w+; learned: (\d+)", proc.stdout).group(1))


def learned_spam(world: World) -> int:
    proc = world.cli("stat")
    return int(re.search(r"BAYES_SPAM type: \w+; learned: (\d+)", proc.stdout).group(1))


def forward_as_attachment(sender: str, to: str, inner: bytes | None) -> bytes:
    from email.message import EmailMessage

    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = sender, to, "Fwd: missed spam"
    outer.set_content("This one got through.")
    if inner is not None:  # as mail clients attach a message: message/rfc822, 8bit
        import email as email_pkg

        outer.add_attachment(email_pkg.message_from_bytes(inner))
    return outer.as_bytes()


def smtp(world: World, sender: str, to: str, raw: bytes, client_addr: str | None = None
         ) -> tuple[int, str]:
    """Send ``raw``; ``client_addr``: play a client at that address (XCLIENT)."""
    with smtplib.SMTP("127.0.0.1", world.postfix.smtp_port, timeout=60) as smtp:
        if client_addr:
            smtp.ehlo()
            code, text = smtp.docmd("XCLIENT", f"ADDR={client_addr} NAME=[UNAVAILABLE]")
            assert code == 220, text
            smtp.ehlo()
        try:
            smtp.sendmail(sender, [to], raw)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error.decode()
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return code, text.decode()
    return 250, ""



"""Unix sockets inside Postfix's chroot, end to end: lookupd and the milter listen under
the queue directory, Postfix is wired with exactly the lines `aliasd postfix-config`
prints, smtpd, cleanup and trivial-rewrite run chrooted (as in Debian's master.cf), and
mail to an alias is accepted, scanned and forwarded while an unknown address is refused.
SQLite only: the socket wiring does not depend on the engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from aliasd.config import load_settings
from aliasd.core import aliases as core
from tests.harness.cli import settings_env
from tests.harness.databases import sqlite_database
from tests.harness.net import wait_for_milter
from tests.harness.postfix import CaptureServer, PostfixInstance, swaks
from tests.harness.processes import start_logged, stop_process

pytestmark = pytest.mark.postfix

ALIAS = "github.com@example.net"
MAILBOX = "alice@real.example"


def _printed_lines(env: dict[str, str]) -> dict[str, str]:
    proc = subprocess.run([sys.executable, "-m", "aliasd", "postfix-config"], env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    lines = {}
    for line in proc.stdout.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition(" = ")
            lines[name.strip()] = value.strip()
    return lines


def _chrooted_to(directory: Path) -> list[str]:
    """Names of processes whose root directory is ``directory``."""
    names = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/root") == str(directory):
                names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return names


@pytest.fixture
def chrooted(tmp_path):
    db = sqlite_database(str(tmp_path / "aliasd.db"))
    with db.session() as s:
        alice = core.create_user(s, "alice", MAILBOX)
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, ALIAS, alice, site="github.com")
    capture = CaptureServer()
    capture.start()
    pf_dir = Path(tempfile.mkdtemp(prefix="aliasd-chroot-pf-", dir="/tmp"))
    os.chmod(pf_dir, 0o755)
    postfix = PostfixInstance(pf_dir / "pf", relay_port=capture.port)
    sockets = postfix.queue_dir / "aliasd"
    sockets.mkdir()
    shutil.chown(sockets, "root", "postfix")
    os.chmod(sockets, 0o750)  # as aliasd.tmpfiles.conf makes it
    settings = load_settings(environ={}, data_dir=str(tmp_path / "data"), database_url=db.url,
                             env="development", secret_key="t" * 20)
    env = settings_env(settings)
    env.update(ALIASD_LOOKUP_SOCKETMAP=f"unix:{sockets}/lookupd.sock", ALIASD_LOOKUP_TCP="",
               ALIASD_MILTER_LISTEN=f"unix:{sockets}/milter.sock",
               ALIASD_POSTFIX_QUEUE_DIRECTORY=str(postfix.queue_dir),
               ALIASD_BLOCKLIST_RELOAD_COMMAND="true")
    procs = [start_logged([sys.executable, "-m", "aliasd", "lookupd"], env, tmp_path / "l.log"),
             start_logged([sys.executable, "-m", "aliasd", "milter"], env, tmp_path / "m.log")]
    subprocess.run([sys.executable, "-m", "aliasd", "blocklist", "write"], env=env, check=True,
                   capture_output=True, timeout=60)
    lines = _printed_lines(env)
    postfix.postconf(**lines)
    service = f"127.0.0.1:{postfix.smtp_port}/inet"
    subprocess.run(["postconf", "-c", str(postfix.config_dir), "-F",
                    f"{service}/chroot = y", "cleanup/unix/chroot = y",
                    "rewrite/unix/chroot = y"], check=True)
    deadline = time.monotonic() + 30
    while not all((sockets / n).exists() for n in ("lookupd.sock", "milter.sock")):
        assert time.monotonic() < deadline, "sockets did not appear"
        time.sleep(0.05)
    wait_for_milter(f"unix:{sockets}/milter.sock")
    postfix.start()
    yield postfix, capture, lines
    postfix.stop()
    capture.stop()
    for proc in procs:
        stop_process(proc)
    shutil.rmtree(pf_dir, ignore_errors=True)
    db.dispose()


def test_sockets_in_the_chroot_serve_a_chrooted_postfix_with_the_printed_lines(chrooted):
    postfix, capture, lines = chrooted
    assert lines["virtual_alias_maps"] == "socketmap:unix:aliasd/lookupd.sock:virtual"
    assert lines["smtpd_milters"] == "unix:aliasd/milter.sock"

    marker = f"chroot-{time.monotonic_ns()}"
    sent = swaks(postfix.smtp_port, to=ALIAS, sender="noreply@github.com",
                 header={"Subject": f"Hello {marker}"}, body="Your pull request was merged.")
    assert sent.returncode == 0, sent.stdout + sent.stderr + postfix.maillog()[-3000:]
    msg = capture.wait_for(lambda m: marker in m.text)
    assert msg.rcpt_tos == [MAILBOX]
    assert msg.header("X-Spamd-Result")  # the milter scanned it
    assert "smtpd" in _chrooted_to(postfix.queue_dir)  # really through a chrooted smtpd

    refused = swaks(postfix.smtp_port, to="nobody@example.net", sender="a@b.example")
    assert "<** 550" in refused.stdout, refused.stdout  # NOTFOUND from lookupd, not a 451


def test_only_sockets_under_the_queue_directory_are_named_relative_to_it():
    from aliasd.postfix.config_lines import postfix_socket_path, postfix_table

    spool = "/var/spool/postfix"
    assert postfix_socket_path("/var/spool/postfix/aliasd/l.sock", spool) == "aliasd/l.sock"
    assert postfix_socket_path("/var/spool/postfix/aliasd/l.sock", spool + "/") == "aliasd/l.sock"
    assert postfix_socket_path("/var/spool/postfix2/l.sock", spool) == "/var/spool/postfix2/l.sock"
    assert postfix_socket_path("/run/aliasd/l.sock", spool) == "/run/aliasd/l.sock"
    assert postfix_socket_path("/var/spool/postfix/l.sock", "") == "/var/spool/postfix/l.sock"
    assert (postfix_table("socketmap", "unix:/var/spool/postfix/aliasd/l.sock", "virtual", spool)
            == "socketmap:unix:aliasd/l.sock:virtual")

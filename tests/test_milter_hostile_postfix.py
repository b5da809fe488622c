"""Hostile mail through a real Postfix and the real ``aliasd milter`` with its default
limits (2 MB scanned, 20 s budget): while messages built to make regexes and parsers
explode are being delivered, ordinary mail keeps arriving promptly and scanned
(X-Spamd-Result present, no "skipped"), and the hostile messages are scanned too."""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import signal
import smtplib
import sys
import tempfile
import time
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.postfix.config_lines import postfix_table
from aliasd.postfix.milter_lines import postfix_milter_settings
from tests.harness.cli import settings_env
from tests.harness.databases import open_clean_database
from tests.harness.hostile_mail import hostile_corpus, unclosed_style_lines, us_dollar_spaces
from tests.harness.net import free_port, wait_for_milter, wait_for_port
from tests.harness.postfix import CaptureServer, PostfixInstance, swaks
from tests.harness.processes import start_logged, stop_process

pytestmark = pytest.mark.postfix

ALIAS = "shop.example@example.net"
MAILBOX = "alice@real.example"


@pytest.fixture(scope="module")
def mailpath(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile-mailpath")
    db = open_clean_database("sqlite", base, request)
    with db.session() as s:
        alice = core.create_user(s, "alice", MAILBOX)
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, ALIAS, alice, site="shop.example")
    settings = load_settings(
        environ={}, data_dir=str(base / "data"), database_url=db.url, env="development",
        secret_key="test", milter_listen=f"127.0.0.1:{free_port()}",
    )
    env = settings_env(settings)
    env["ALIASD_MILTER_LISTEN"] = settings.milter_listen
    env["ALIASD_BLOCKLIST_RELOAD_COMMAND"] = "true"
    pf_dir = Path(tempfile.mkdtemp(prefix="aliasd-hostile-pf-", dir="/tmp"))
    os.chmod(pf_dir, 0o755)
    milter = start_logged([sys.executable, "-m", "aliasd", "milter"], env, base / "milter.log")
    lookup_port = free_port()
    lookupd = start_logged(
        [sys.executable, "-m", "aliasd", "lookupd", "--socketmap", f"127.0.0.1:{lookup_port}",
         "--tcp", ""],
        env, base / "lookupd.log",
    )  # fmt: skip
    table = postfix_table("socketmap", f"127.0.0.1:{lookup_port}", "virtual")
    capture = CaptureServer()
    capture.start()
    postfix = PostfixInstance(
        pf_dir / "pf", relay_port=capture.port,
        main_cf={"virtual_alias_domains": table, "virtual_alias_maps": table,
                 **postfix_milter_settings(settings)},
    )  # fmt: skip
    wait_for_port(lookup_port)
    wait_for_milter(settings.milter_listen)
    postfix.start()
    yield postfix, capture, milter
    for proc in (milter, lookupd):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    postfix.stop()
    capture.stop()
    for proc in (milter, lookupd):
        stop_process(proc)
    shutil.rmtree(pf_dir, ignore_errors=True)
    db.dispose()


def header(msg, name: str) -> str | None:
    # headers only: the stdlib's full parse recurses past its limit on the nested bomb
    return BytesHeaderParser().parsebytes(msg.data).get(name)


def send_raw(port: int, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
        smtp.sendmail("someone@example.org", [ALIAS], raw)


def test_ordinary_mail_is_scanned_promptly_while_hostile_mail_is_delivered(mailpath):
    postfix, capture, milter = mailpath
    corpus = hostile_corpus()
    hostile = {
        "styles": unclosed_style_lines(66_000),
        "spaces": us_dollar_spaces(50_000),
        "lt": corpus["'<' without '>' x 1.9 MB"],
        "href": corpus["href= + 1.9 MB of spaces"],
        "parts": corpus["tiny MIME parts x 60,000"],
        "nested": corpus["nested multiparts x 2,000"],
    }
    tagged = {
        name: raw.replace(b"Subject: hello", b"Subject: hostile-" + name.encode(), 1)
        for name, raw in hostile.items()
    }
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(tagged)) as pool:
        sends = [pool.submit(send_raw, postfix.smtp_port, raw) for raw in tagged.values()]
        latencies = []
        for i in range(8):
            marker = f"ordinary-{i}-{time.monotonic_ns()}"
            t0 = time.monotonic()
            proc = swaks(postfix.smtp_port, to=ALIAS, sender="news@shop.example",
                         header={"From": "news@shop.example", "Subject": marker},
                         body="Our spring catalogue is out.")
            assert proc.returncode == 0, proc.stdout + proc.stderr
            msg = capture.wait_for(lambda m, marker=marker: marker in m.text, timeout=60)
            latencies.append(time.monotonic() - t0)
            assert msg.header("X-Spamd-Result").startswith("default: ")
            assert msg.header("X-Aliasd-Scan") is None
        for future in sends:
            future.result()
    # ordinary mail never waited behind the hostile messages (it waited 30 s each before);
    # the bound leaves room for a loaded machine (11 s seen with two CPU burners running)
    assert max(latencies) < 20, latencies
    for name in tagged:
        msg = capture.wait_for(lambda m, name=name: f"hostile-{name}" in m.text, timeout=60)
        assert header(msg, "X-Spamd-Result").startswith("default: "), name
        # over 2 MB: "truncated (scanned the first ...)"; never "skipped"
        scan = header(msg, "X-Aliasd-Scan") or ""
        assert not scan.startswith("skipped"), (name, scan)
    assert time.monotonic() - started < 60
    assert milter.poll() is None
    assert "timed out" not in postfix.maillog()

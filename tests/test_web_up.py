"""`aliasd up` as a real process: web (gunicorn), lookupd and milter start, the web app
answers HTTP, lookupd answers a socketmap query, Ctrl-C (SIGINT) stops everything, and
a child that dies stops the rest with a report."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from aliasd.config import load_settings
from tests.harness.cli import settings_env
from tests.harness.databases import sqlite_database
from tests.harness.net import free_port, wait_for_port


@pytest.fixture
def settings(tmp_path):
    """SQLite only: the process wiring does not depend on the engine, and one engine
    keeps these multi-process tests fast (the views run on both in test_web_app.py)."""
    db = sqlite_database(str(tmp_path / "aliasd.db"))
    db.dispose()
    return load_settings(environ={}, env="development", secret_key="u" * 32,
                         database_url=db.url, data_dir=str(tmp_path / "data"))


def _start(settings, tmp_path, *extra: str):
    web, sm, tcp, milter = (free_port() for _ in range(4))
    env = settings_env(settings)
    env.update(ALIASD_LOOKUP_SOCKETMAP=f"127.0.0.1:{sm}", ALIASD_LOOKUP_TCP=f"127.0.0.1:{tcp}",
               ALIASD_MILTER_LISTEN=f"127.0.0.1:{milter}", ALIASD_SESSION_COOKIE_SECURE="false")
    out = open(tmp_path / "up.out", "w+")  # noqa: SIM115 - read back after the process ends
    err = open(tmp_path / "up.err", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "aliasd", "up", "--listen", f"127.0.0.1:{web}", "--workers", "1",
         *extra],
        env=env, stdout=out, stderr=err, text=True,
    )
    return proc, (web, sm, tcp, milter), out, err


def _pids(err) -> dict[str, int]:
    err.seek(0)
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"started (\w+) \(pid (\d+)\)", err.read())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids, timeout=20.0):
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if _alive(p)]}"
        time.sleep(0.1)


def test_up_serves_and_stops_on_ctrl_c(settings, tmp_path):
    proc, (web, sm, _tcp, _milter), out, err = _start(settings, tmp_path)
    try:
        wait_for_port(web, timeout=30)
        response = requests.get(f"http://127.0.0.1:{web}/login", timeout=10)
        assert response.status_code == 200 and "Sign in" in response.text
        wait_for_port(sm, timeout=30)
        with socket.create_connection(("127.0.0.1", sm), timeout=5) as sock:
            query = b"virtual nobody@unknown.example"
            sock.sendall(b"%d:%s," % (len(query), query))
            assert sock.recv(100).split(b":", 1)[1].startswith(b"NOTFOUND")
        pids = _pids(err)
        assert {"web", "lookupd", "milter"} <= set(pids)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        _wait_gone(pids.values())
        out.seek(0)
        printed = out.read()
        assert f"http://127.0.0.1:{web}/" in printed
        assert "virtual_alias_maps" in printed  # the Postfix lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_reports_a_dead_child_and_stops_the_rest(settings, tmp_path):
    proc, (web, _sm, _tcp, _milter), _out, err = _start(settings, tmp_path, "--no-milter")
    try:
        wait_for_port(web, timeout=30)
        deadline = time.monotonic() + 20
        while "lookupd" not in _pids(err):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        pids = _pids(err)
        os.kill(pids["lookupd"], signal.SIGKILL)
        assert proc.wait(timeout=30) == 1
        _wait_gone(pids.values())
        err.seek(0)
        assert "lookupd exited with status -9; stopped the others" in err.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_refuses_default_secret_in_production(settings):
    env = settings_env(settings)
    env.update(ALIASD_ENV="production", ALIASD_SECRET_KEY="change-me")
    result = subprocess.run([sys.executable, "-m", "aliasd", "up"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "secret_key is missing or the default" in result.stderr

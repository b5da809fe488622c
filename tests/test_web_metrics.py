"""The web app's /metrics: requests counted by endpoint and status, served to loopback
or with the metrics token, never to a client behind a proxy without the token; under
gunicorn with several workers, the counts of all workers add up (multiprocess mode)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.harness.cli import settings_env
from tests.harness.net import free_port, wait_for_port
from tests.harness.webapp import make_app

TOKEN = "scrape-" + "s" * 24


@pytest.fixture
def app(settings):
    return make_app(settings, web_metrics_token=TOKEN)


def _count(text: str, endpoint: str, status: str) -> float:
    pattern = rf'^aliasd_web_requests_total\{{endpoint="{re.escape(endpoint)}",status="{status}"\}} (\S+)$'
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


def test_requests_are_counted_by_endpoint_and_status(app):
    client = app.test_client()
    before = client.get("/metrics").get_data(as_text=True)
    assert client.get("/login").status_code == 200
    assert client.get("/login").status_code == 200
    assert client.get("/no-such-page").status_code == 404
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert _count(text, "auth.login", "200") - _count(before, "auth.login", "200") == 2
    assert _count(text, "none", "404") - _count(before, "none", "404") == 1
    assert 'aliasd_web_request_seconds_count{endpoint="auth.login"}' in text


def test_metrics_need_loopback_or_the_token(app):
    client = app.test_client()
    remote = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/metrics", environ_base=remote).status_code == 403
    wrong = client.get("/metrics", environ_base=remote, headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 403
    ok = client.get("/metrics", environ_base=remote,
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and b"aliasd_web_requests_total" in ok.data
    # A reverse proxy on the same host: loopback address, but a client from anywhere.
    proxied = client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.9"})
    assert proxied.status_code == 403
    assert b"aliasd_web" not in proxied.data


def _get_login(port: int) -> int:
    # generous: a worker's first request imports the app, slow on a loaded machine
    return requests.get(f"http://127.0.0.1:{port}/login", timeout=60,
                        headers={"Connection": "close"}).status_code


def test_gunicorn_workers_add_up_in_multiprocess_mode(settings, tmp_path):
    port = free_port()
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    env = settings_env(settings)
    env.update(PROMETHEUS_MULTIPROC_DIR=str(multiproc), ALIASD_SESSION_COOKIE_SECURE="false")
    log = open(tmp_path / "gunicorn.log", "w+")  # noqa: SIM115 - read back on failure
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "3",
         "aliasd.web.wsgi:app"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60)
        # Parallel requests on fresh connections: a sync worker serves one at a time, so
        # the others must take some. Workers still booting may miss the first rounds.
        answered = 0
        deadline = time.monotonic() + 60
        while True:
            with ThreadPoolExecutor(max_workers=6) as pool:
                codes = list(pool.map(lambda _: _get_login(port), range(12)))
            assert codes == [200] * 12
            answered += 12
            files = [f for f in os.listdir(multiproc) if f.startswith("counter_")]
            if len(files) >= 2 or time.monotonic() > deadline:
                break
        assert len(files) >= 2, files  # more than one worker answered
        for _ in range(3):  # whichever worker answers the scrape reports all of them
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            assert _count(text, "auth.login", "200") == answered
    finally:
        proc.terminate()
        proc.wait(timeout=30)

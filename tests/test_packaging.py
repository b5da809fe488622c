"""A normal (not editable) install works outside the checkout: the wheel, built from the
sdist, carries templates and migrations; installed into a fresh venv in a temporary
directory it migrates a database, serves the sign-in page through ``aliasd up`` and
answers Postfix lookups.

The fresh venv gets aliasd only from the wheel. Its dependencies come from the
project's venv through a ``.pth`` line (offline and fast; ``pip check`` confirms they
satisfy the wheel's requirements). A ``.pth`` line in a path directory does not run
that directory's own ``.pth`` files, so the project's editable aliasd stays invisible."""

from __future__ import annotations

import os
import site
import socket
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
import requests

from tests.harness.net import free_port, wait_for_port

CHECKOUT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel (the wheel built from the sdist, as `python -m build` does)."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(CHECKOUT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with the wheel installed; returns its bin dir."""
    root = tmp_path_factory.mktemp("fresh")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    bin_dir = venv / "bin"
    purelib = subprocess.run(
        [str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "aliasd-test-deps.pth").write_text(site.getsitepackages()[0] + "\n")
    wheel = next(dist.glob("aliasd-*.whl"))
    pip = [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"),
           "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   cwd=root)
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, cwd=root)
    # The project's venv holds the editable aliasd too; only the wheel's requirements matter.
    problems = [line for line in check.stdout.splitlines() if "requires" in line]
    assert not problems, check.stdout
    return bin_dir


def _env(bin_dir: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ALIASD_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
               ALIASD_DATA_DIR=str(data_dir), ALIASD_ENV="development",
               ALIASD_SECRET_KEY="p" * 32, ALIASD_SESSION_COOKIE_SECURE="false",
               ALIASD_BLOCKLIST_RELOAD_COMMAND="true", **extra)
    return env


def _aliasd(bin_dir: Path, env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None):
    proc = subprocess.run([str(bin_dir / "aliasd"), *args], env=env, cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"aliasd {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def test_wheel_and_sdist_carry_templates_migrations_static_and_units(dist):
    with zipfile.ZipFile(next(dist.glob("aliasd-*.whl"))) as wheel:
        names = set(wheel.namelist())
    for name in ("aliasd/templates/auth/login.html", "aliasd/templates/base.html",
                 "aliasd/migrations/env.py", "aliasd/migrations/script.py.mako",
                 "aliasd/migrations/versions/0001_initial.py", "aliasd/web/static/style.css",
                 "aliasd/web/static/favicon.svg",
                 "aliasd/web/wsgi.py", "aliasd/systemd/aliasd-lookupd.service",
                 "aliasd/data/rules/aliasd.cf"):
        assert name in names, name
    with tarfile.open(next(dist.glob("aliasd-*.tar.gz"))) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {"templates/auth/login.html", "migrations/env.py", "setup.py",
            "aliasd/web/static/style.css"} <= members


def test_installed_wheel_migrates_serves_sign_in_and_answers_lookups(installed, tmp_path):
    env = _env(installed, tmp_path / "data")
    where = subprocess.run([str(installed / "python"), "-c", "import aliasd; print(aliasd.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(installed.parent)), where.stdout  # not the checkout

    assert "database at revision" in _aliasd(installed, env, tmp_path, "db", "upgrade")
    _aliasd(installed, env, tmp_path, "user", "add", "me", "--mailbox", "me@real.example",
            "--password-stdin", stdin="a long password\n")
    _aliasd(installed, env, tmp_path, "domain", "add", "example.net", "--owner", "me")
    _aliasd(installed, env, tmp_path, "alias", "add", "github.com@example.net", "--owner", "me")

    web, sm, tcp, milter = (free_port() for _ in range(4))
    env.update(ALIASD_LOOKUP_SOCKETMAP=f"127.0.0.1:{sm}", ALIASD_LOOKUP_TCP=f"127.0.0.1:{tcp}",
               ALIASD_MILTER_LISTEN=f"127.0.0.1:{milter}")
    log = open(tmp_path / "up.log", "w+")  # noqa: SIM115 - read back on failure
    up = subprocess.Popen([str(installed / "aliasd"), "up", "--listen", f"127.0.0.1:{web}",
                           "--workers", "1"], env=env, cwd=tmp_path, stdout=log,
                          stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port(web, timeout=60)
            wait_for_port(sm, timeout=60)
        except Exception:
            log.seek(0)
            pytest.fail(f"aliasd up did not start:\n{log.read()}")
        response = requests.get(f"http://127.0.0.1:{web}/login", timeout=10)
        assert response.status_code == 200 and "Sign in" in response.text
        assert requests.get(f"http://127.0.0.1:{web}/static/style.css", timeout=10).ok
        assert _lookup_once_loaded(sm, b"virtual github.com@example.net") == b"OK me@real.example"
    finally:
        up.terminate()
        up.wait(timeout=30)


def _lookup_once_loaded(port: int, query: bytes) -> bytes:
    """The socketmap reply, once lookupd has loaded its data (TEMP until then)."""
    deadline = time.monotonic() + 30
    while True:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"%d:%s," % (len(query), query))
            reply = _read_netstring(sock)
        if not reply.startswith(b"TEMP") or time.monotonic() > deadline:
            return reply
        time.sleep(0.1)


def _read_netstring(sock: socket.socket) -> bytes:
    buf = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        buf += sock.recv(4096)
        length, sep, rest = buf.partition(b":")
        if sep and len(rest) > int(length):
            return rest[: int(length)]
    raise AssertionError(f"no complete reply: {buf!r}")

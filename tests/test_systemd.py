"""`aliasd systemd` prints and writes the units (web, lookupd, milter, Postfix reload,
quarantine requests and purge), the system user and the socket directory for this
installation, as README's Production section says; systemd itself accepts the units
(`systemd-analyze verify`, with their commands present)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

UNITS = ["aliasd-web.service", "aliasd-lookupd.service", "aliasd-milter.service",
         "aliasd-postfix-reload.service", "aliasd-postfix-reload.path", "aliasd-quarantine.path",
         "aliasd-quarantine.service", "aliasd-quarantine-purge.service",
         "aliasd-quarantine-purge.timer"]
README = Path(__file__).resolve().parents[1] / "README.md"
ELSEWHERE = {"ALIASD_DATA_DIR": "/srv/aliasd", "ALIASD_WEB_LISTEN": "127.0.0.1:18080"}
HARDENING = ["User=aliasd", "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes",
             "ProtectHome=yes", "CapabilityBoundingSet="]


def _aliasd(*args: str, settings: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``aliasd ARGS`` as root runs it for an install: default settings, or ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIASD_")}
    env.update(settings or {})
    return subprocess.run([sys.executable, "-m", "aliasd", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def _verify(paths: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_systemd_prints_every_unit_for_this_installation():
    result = _aliasd("systemd")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    bin_dir = sysconfig.get_path("scripts")
    for unit in UNITS:
        assert f"# ==> /etc/systemd/system/{unit} <==" in out
    assert "# ==> /etc/sysusers.d/aliasd.conf <==" in out
    assert "d /var/spool/postfix/aliasd 0750 aliasd postfix -" in out
    assert "d /var/lib/aliasd 0751 aliasd aliasd -" in out
    assert f"ExecStart={bin_dir}/aliasd lookupd" in out
    assert f"ExecStart={bin_dir}/aliasd milter" in out
    assert f"ExecStart={bin_dir}/gunicorn " in out and "aliasd.web.wsgi:app" in out
    assert "/opt/aliasd" not in out
    assert "LimitNOFILE=65536" in out


def _production_section() -> str:
    text = README.read_text()
    start = text.index("## Production")
    return text[start:text.index("\n## ", start + 1)]


def _enabled_units(text: str) -> list[str]:
    """The units of the last `systemctl enable --now ...` line in ``text``."""
    lines = [line for line in text.splitlines() if "systemctl enable --now " in line]
    return lines[-1].split("systemctl enable --now ", 1)[1].split()


def test_readme_enables_exactly_the_units_aliasd_systemd_says_to_enable():
    """Following README's Production section starts every unit the printed units rely on
    (the quarantine path and timer too: web releases, purge and digest need them)."""
    result = _aliasd("systemd")
    assert result.returncode == 0, result.stderr
    printed = _enabled_units(result.stdout)
    assert "aliasd-quarantine.path" in printed and "aliasd-quarantine-purge.timer" in printed
    assert _enabled_units(_production_section()) == printed


def test_readme_lists_every_file_aliasd_systemd_installs():
    result = _aliasd("systemd")
    assert result.returncode == 0, result.stderr
    installed = {target.removeprefix("/etc/systemd/system/")
                 for target in re.findall(r"^# ==> (\S+) <==$", result.stdout, re.M)}
    listed = set()
    for row in _production_section().splitlines():
        if not row.startswith("| `"):
            continue
        first, *others = re.findall(r"`([^`]+)`", row.split("|")[1])
        stem = first.rsplit(".", 1)[0]
        listed |= {first} | {stem + other for other in others if other.startswith(".")}
    assert installed == listed


@pytest.mark.parametrize("unit", ["aliasd-web.service", "aliasd-lookupd.service",
                                  "aliasd-milter.service"])
def test_services_run_hardened_as_the_aliasd_user(tmp_path, unit):
    assert _aliasd("systemd", "--write", str(tmp_path)).returncode == 0
    text = (tmp_path / "etc/systemd/system" / unit).read_text()
    for line in HARDENING:
        assert line in text.splitlines(), f"{unit}: {line}"
    writable = next(line for line in text.splitlines() if line.startswith("ReadWritePaths="))
    assert "/var/lib/aliasd" in writable.split("=", 1)[1].split()
    if unit != "aliasd-web.service":  # the sockets inside Postfix's chroot, if there
        assert "-/var/spool/postfix/aliasd" in writable.split("=", 1)[1].split()


def _directives(text: str, key: str) -> list[str]:
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(key + "=")]


def test_a_failed_release_request_does_not_stop_the_daily_purge_and_digest(tmp_path):
    """A oneshot unit stops at the first ExecStart that fails; ``quarantine apply`` exits 1
    when one request fails (say its learning), which must not cost the day's purge and
    digest. The purge still fails the unit when it fails."""
    assert _aliasd("systemd", "--write", str(tmp_path)).returncode == 0
    text = (tmp_path / "etc/systemd/system/aliasd-quarantine-purge.service").read_text()
    commands = _directives(text, "ExecStart")
    assert [c.split()[-1] for c in commands] == ["apply", "purge", "digest"]
    assert [c.startswith("-") for c in commands] == [True, False, False]


def test_units_follow_the_data_dir_and_web_listen_settings(tmp_path):
    """The path units watch the files aliasd really writes, the daemons may write where
    the data is, and gunicorn listens where web_listen says."""
    result = _aliasd("systemd", "--write", str(tmp_path), settings=ELSEWHERE)
    assert result.returncode == 0, result.stderr
    units = tmp_path / "etc/systemd/system"
    web = (units / "aliasd-web.service").read_text()
    assert "--bind 127.0.0.1:18080 " in _directives(web, "ExecStart")[0]
    assert _directives((units / "aliasd-postfix-reload.path").read_text(), "PathChanged") == [
        "/srv/aliasd/header_checks"]
    assert _directives((units / "aliasd-quarantine.path").read_text(), "PathChanged") == [
        "/srv/aliasd/quarantine-requests"]
    for daemon in ("aliasd-web.service", "aliasd-lookupd.service", "aliasd-milter.service"):
        text = (units / daemon).read_text()
        assert "/srv/aliasd" in _directives(text, "ReadWritePaths")[0].split(), daemon
        assert not _directives(text, "StateDirectory"), daemon  # it would make /var/lib/aliasd
    tmpfiles = (tmp_path / "etc/tmpfiles.d/aliasd.conf").read_text()
    assert "d /srv/aliasd 0751 aliasd aliasd -" in tmpfiles.splitlines()
    written = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "/var/lib/aliasd" not in written and "1:8080 " not in written


def test_the_reload_path_unit_watches_a_blocklist_file_outside_the_data_dir(tmp_path):
    settings = {**ELSEWHERE, "ALIASD_BLOCKLIST_FILE": "/etc/postfix/aliasd_header_checks"}
    assert _aliasd("systemd", "--write", str(tmp_path), settings=settings).returncode == 0
    units = tmp_path / "etc/systemd/system"
    assert _directives((units / "aliasd-postfix-reload.path").read_text(), "PathChanged") == [
        "/etc/postfix/aliasd_header_checks"]
    for daemon in ("aliasd-web.service", "aliasd-lookupd.service", "aliasd-milter.service"):
        writable = _directives((units / daemon).read_text(), "ReadWritePaths")[0].split()
        assert {"/srv/aliasd", "-/etc/postfix"} <= set(writable), daemon


def test_systemd_refuses_a_relative_data_dir():
    result = _aliasd("systemd", settings={"ALIASD_DATA_DIR": "data"})
    assert result.returncode != 0
    assert "absolute path" in result.stderr and "# ==>" not in result.stdout


def test_systemd_warns_when_the_data_dir_is_hidden_from_the_services():
    """A data directory in a home directory (the default for a user other than root)
    cannot be reached by services with ProtectHome=yes."""
    result = _aliasd("systemd", settings={"ALIASD_DATA_DIR": "/home/me/.local/share/aliasd"})
    assert result.returncode == 0, result.stderr
    assert "data_dir /home/me/.local/share/aliasd is hidden from the services" in result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
@pytest.mark.parametrize("settings", [{}, ELSEWHERE], ids=["defaults", "elsewhere"])
def test_systemd_analyze_accepts_the_written_units(tmp_path, settings):
    result = _aliasd("systemd", "--write", str(tmp_path), settings=settings)
    assert result.returncode == 0, result.stderr
    units = [tmp_path / "etc/systemd/system" / u for u in UNITS]
    verified = _verify(units)
    assert verified.returncode == 0, verified.stderr
    ours = [line for line in verified.stderr.splitlines() if "aliasd" in line]
    assert not ours, ours


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_would_catch_a_broken_unit(tmp_path):
    """The check above can fail: a unit naming a command that is not there is reported."""
    assert _aliasd("systemd", "--bin-dir", str(tmp_path / "nowhere"), "--write",
                   str(tmp_path)).returncode == 0
    verified = _verify([tmp_path / "etc/systemd/system/aliasd-lookupd.service"])
    assert verified.returncode != 0
    assert "is not executable" in verified.stderr


@pytest.mark.skipif(shutil.which("systemd-tmpfiles") is None or shutil.which("systemd-sysusers")
                    is None, reason="systemd is not installed")
def test_sysusers_and_tmpfiles_make_the_user_and_the_directories(tmp_path):
    """Applied to a scratch root: the aliasd user, /var/lib/aliasd (0751) and the socket
    directory inside Postfix's chroot (0750, aliasd:postfix)."""
    assert _aliasd("systemd", "--write", str(tmp_path)).returncode == 0
    users = subprocess.run(["systemd-sysusers", f"--root={tmp_path}",
                            str(tmp_path / "etc/sysusers.d/aliasd.conf")],
                           capture_output=True, text=True, timeout=60)
    assert users.returncode == 0, users.stderr
    entry = next(line for line in (tmp_path / "etc/passwd").read_text().splitlines()
                 if line.startswith("aliasd:"))
    uid = int(entry.split(":")[2])
    assert entry.endswith(":/var/lib/aliasd:/usr/sbin/nologin")
    with open(tmp_path / "etc/group", "a") as group:  # Postfix's package makes this one
        group.write("postfix:x:4242:\n")
    made = subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create",
                           str(tmp_path / "etc/tmpfiles.d/aliasd.conf")],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    data = (tmp_path / "var/lib/aliasd").stat()
    sockets = (tmp_path / "var/spool/postfix/aliasd").stat()
    assert (data.st_mode & 0o7777, data.st_uid) == (0o751, uid)
    assert (sockets.st_mode & 0o7777, sockets.st_uid, sockets.st_gid) == (0o750, uid, 4242)

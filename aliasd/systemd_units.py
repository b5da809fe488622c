"""The systemd units, sysusers and tmpfiles entries for this installation: the files
shipped in ``aliasd/systemd`` (written for the defaults: /opt/aliasd/venv/bin,
/var/lib/aliasd, 127.0.0.1:8080) with the paths and address these settings give."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from aliasd.config import Settings
from aliasd.resources import PACKAGE_DIR

UNITS_DIR = PACKAGE_DIR / "systemd"
SYSTEM_UNIT_DIR = "/etc/systemd/system"
RELOAD_PATH_UNIT = "aliasd-postfix-reload.path"

# shipped file → where it is installed
INSTALL_PATHS = {
    "aliasd.sysusers.conf": "/etc/sysusers.d/aliasd.conf",
    "aliasd.tmpfiles.conf": "/etc/tmpfiles.d/aliasd.conf",
    **{name: f"{SYSTEM_UNIT_DIR}/{name}" for name in (
        "aliasd-web.service", "aliasd-lookupd.service", "aliasd-milter.service",
        "aliasd-postfix-reload.service", RELOAD_PATH_UNIT, "aliasd-quarantine.path",
        "aliasd-quarantine.service", "aliasd-quarantine-purge.service",
        "aliasd-quarantine-purge.timer",
    )},
}  # fmt: skip

# What `systemctl enable --now` needs: the daemons, and the path units and the timer that
# start the root oneshot services (which have no [Install] of their own).
ENABLE_UNITS = ["aliasd-lookupd", "aliasd-milter", "aliasd-web", RELOAD_PATH_UNIT,
                "aliasd-quarantine.path", "aliasd-quarantine-purge.timer"]

SHIPPED_BIN_DIR = "/opt/aliasd/venv/bin"
SHIPPED_DATA_DIR = "/var/lib/aliasd"
SHIPPED_WEB_LISTEN = "127.0.0.1:8080"
# StateDirectory= can only name a directory under /var/lib; elsewhere tmpfiles makes it.
_STATE_DIRECTORY = re.compile(r"^StateDirectory=.*?^StateDirectoryMode=[^\n]*\n", re.M | re.S)


def _substitute(text: str, values: dict[str, str]) -> str:
    # One pass, longest first: a replaced path is never rewritten again, and the data
    # directory's files are matched before the directory itself.
    keys = sorted(values, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(k) for k in keys) + r"(?![\w.-])")
    return pattern.sub(lambda m: values[m.group(0)], text)


def _inside(path: str, directory: str) -> bool:
    return os.path.commonpath([path, directory]) == directory


def rendered_files(settings: Settings, bin_dir: str) -> dict[str, str]:
    """Install path → content, following ``settings`` (data_dir, the blocklist file, the
    quarantine-requests file, web_listen) with the commands in ``bin_dir``."""
    data_dir = os.path.normpath(settings.data_dir)
    blocklist = os.path.normpath(settings.effective_blocklist_file)
    requests = os.path.normpath(settings.quarantine_requests_file)
    for path in (data_dir, blocklist):
        if not os.path.isabs(path):
            raise ValueError(f"{path!r}: the units need an absolute path")
    values = {
        SHIPPED_BIN_DIR: bin_dir.rstrip("/"),
        f"{SHIPPED_DATA_DIR}/header_checks": blocklist,
        f"{SHIPPED_DATA_DIR}/quarantine-requests": requests,
        SHIPPED_DATA_DIR: data_dir,
        SHIPPED_WEB_LISTEN: settings.web_listen,
    }
    # the daemons rename a new table into place: its directory must be writable too
    # ("-": a missing one fails the blocklist write, not the daemons' start)
    extra_writable = "" if _inside(blocklist, data_dir) else f" -{os.path.dirname(blocklist)}"
    files = {}
    for name, target in INSTALL_PATHS.items():
        text = _substitute((UNITS_DIR / name).read_text(), values)
        if data_dir != SHIPPED_DATA_DIR:
            text = _STATE_DIRECTORY.sub("", text)
        text = re.sub(r"^(ReadWritePaths=.*)$", lambda m: m.group(1) + extra_writable, text,
                      flags=re.M)
        files[target] = text
    return files


def hidden_from_services(path: str) -> bool:
    """Whether ``ProtectHome=yes`` (every daemon's) hides ``path`` from the services."""
    return any(_inside(os.path.normpath(path), home) for home in ("/home", "/root", "/run/user"))


# Where systemd reads system units from, first match wins (systemd.unit(5)).
UNIT_DIRS = (SYSTEM_UNIT_DIR, "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system", "/lib/systemd/system")


def installed_unit(name: str, unit_dirs: Sequence[str] = UNIT_DIRS) -> Path | None:
    """The unit file systemd would load for ``name`` from ``unit_dirs``, if there is one."""
    for directory in unit_dirs:
        path = Path(directory) / name
        if path.is_file():
            return path
    return None


def watched_paths(unit_text: str) -> list[str]:
    """The files a path unit starts its service for when they change."""
    return [line.split("=", 1)[1].strip() for line in unit_text.splitlines()
            if line.startswith(("PathChanged=", "PathModified="))]  # fmt: skip

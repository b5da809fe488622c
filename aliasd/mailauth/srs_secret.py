"""The SRS secret when none is configured: generated once (``aliasd db upgrade``, or the
first SRS lookup) into ``<data_dir>/srs_secrets`` with mode 0600, one secret per line,
the first signing and all verifying. ``aliasd srs rotate`` puts a new one first; the
old ones keep verifying bounces until they expire (keep at most ``KEEP`` of them)."""

from __future__ import annotations

import contextlib
import fcntl
import secrets
from pathlib import Path

from aliasd.config import Settings
from aliasd.files import replace_file

KEEP = 3


def secret_file(settings: Settings) -> Path:
    return Path(settings.data_dir) / "srs_secrets"


def read_secrets(settings: Settings) -> list[str]:
    """The configured ``srs_secrets``, else the generated file's; [] when neither."""
    if settings.srs_secrets:
        return list(settings.srs_secrets)
    try:
        text = secret_file(settings).read_text("utf-8")
    except FileNotFoundError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def _write(settings: Settings, path: Path, values: list[str]) -> None:
    from aliasd.mailauth.keys import owned_like_data_dir

    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, "".join(v + "\n" for v in values).encode(), mode=0o600,
                 prepare=lambda tmp: owned_like_data_dir(settings, tmp))


@contextlib.contextmanager
def _locked(settings: Settings):
    path = secret_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(str(path) + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield path
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_secret(settings: Settings) -> bool:
    """Create the secret file if SRS needs one and none exists; True when created."""
    if settings.srs_secrets:
        return False
    with _locked(settings) as path:
        if read_secrets(settings):
            return False
        _write(settings, path, [secrets.token_urlsafe(32)])
        return True


def rotate(settings: Settings) -> list[str]:
    """A new secret first; returns the list now in force."""
    if settings.srs_secrets:
        raise ValueError("srs_secrets is set in the configuration: rotate it there")
    with _locked(settings) as path:
        values = [secrets.token_urlsafe(32), *read_secrets(settings)][:KEEP]
        _write(settings, path, values)
        return values

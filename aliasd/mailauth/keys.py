"""DKIM keys per managed domain: an RSA 2048 key (and optionally an ed25519 key as a
second signature), generated when the domain is added or first used, rotated with an
overlap period.

Keys live as files under ``dkim_keys_dir`` (default ``<data_dir>/dkim``), not in the
database: a private key then never travels in database dumps, replicas or the web
process's queries, and an admin can back it up, restore or replace it with ordinary
file tools (opendkim keeps keys the same way). Layout::

    <keys dir>/<domain>/keys.json              which keys exist, since when, until when
    <keys dir>/<domain>/<selector>.<alg>.pem    private key, mode 0600 (dirs 0700)

A rotated-out key stays listed with ``retire_after``: no longer used for signing, still
published by ``aliasd dns`` until then, so mail signed just before the rotation keeps
verifying.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from aliasd.config import Settings
from aliasd.files import replace_file
from aliasd.mailauth import fastrsa  # noqa: F401 - OpenSSL signing for dkimpy

RSA = "rsa-sha256"
ED25519 = "ed25519-sha256"
RSA_BITS = 2048
_SELECTOR_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_DOMAIN_RE = re.compile(r"^[a-z0-9.-]{1,253}$")


class DkimKeyError(ValueError):
    """A domain or selector that cannot name a key, or a key file that cannot be read."""


@dataclass(frozen=True)
class SigningKey:
    selector: str
    domain: str
    algorithm: str  # "rsa-sha256" | "ed25519-sha256"
    private_key_pem: bytes
    created: str = ""  # ISO 8601 UTC
    retire_after: str | None = None  # set once rotated out

    @property
    def dns_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def public_key_b64(self) -> str:
        key = serialization.load_pem_private_key(self.private_key_pem, password=None)
        public = key.public_key()
        if self.algorithm == ED25519:
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return base64.b64encode(raw).decode()

    def dns_txt(self) -> str:
        """The TXT record's text (RFC 6376 3.6.1; ed25519: RFC 8463)."""
        k = "ed25519" if self.algorithm == ED25519 else "rsa"
        return f"v=DKIM1; k={k}; p={self.public_key_b64()}"

    def dkimpy_private_key(self) -> bytes:
        """The key as dkimpy takes it: PKCS#1 PEM for RSA, base64 seed for ed25519."""
        if self.algorithm != ED25519:
            return self.private_key_pem
        key = serialization.load_pem_private_key(self.private_key_pem, password=None)
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )  # fmt: skip
        return base64.b64encode(raw)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _check_domain(domain: str) -> str:
    name = domain.strip().lower().rstrip(".")
    if not _DOMAIN_RE.match(name) or ".." in name or name.startswith((".", "-")):
        raise DkimKeyError(f"not a domain name: {domain!r}")
    return name


def _domain_dir(settings: Settings, domain: str) -> Path:
    return Path(settings.effective_dkim_keys_dir) / _check_domain(domain)


@contextlib.contextmanager
def _locked(settings: Settings, domain: str) -> Iterator[Path]:
    """The domain's key directory, locked against a concurrent generator (the web app,
    the CLI and the milter may all create a missing key at once)."""
    directory = _domain_dir(settings, domain)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(directory.parent, 0o700)
    lock_path = directory / ".lock"
    lock_path.touch(exist_ok=True)
    for path in (directory.parent, directory, lock_path):
        owned_like_data_dir(settings, path)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield directory
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_index(directory: Path) -> list[dict]:
    try:
        data = json.loads((directory / "keys.json").read_text("utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise DkimKeyError(f"{directory / 'keys.json'} cannot be read: {exc}") from exc
    return list(data.get("keys", []))


def owned_like_data_dir(settings: Settings, path: Path) -> None:
    """Give ``path`` the owner of the data directory: a root shell running ``aliasd
    domain add`` must not leave key files the services' user (``aliasd``) cannot read."""
    if os.geteuid() != 0:
        return
    try:
        ref = os.stat(settings.data_dir)
        os.chown(path, ref.st_uid, ref.st_gid)
    except OSError:
        pass


def _write_private(path: Path, data: bytes, settings: Settings | None = None) -> None:
    replace_file(path, data, mode=0o600,
                 prepare=None if settings is None else lambda tmp: owned_like_data_dir(settings, tmp))


def _write_index(directory: Path, entries: list[dict], settings: Settings) -> None:
    text = json.dumps({"keys": entries}, indent=2, sort_keys=True) + "\n"
    _write_private(directory / "keys.json", text.encode(), settings)


def _generate_pem(algorithm: str) -> bytes:
    if algorithm == ED25519:
        return ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )  # fmt: skip
    # PKCS#1 ("BEGIN RSA PRIVATE KEY"): the form dkimpy parses
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )  # fmt: skip


def _base_selector(settings: Settings, now: dt.datetime) -> str:
    selector = (settings.dkim_selector or f"aliasd{now:%Y%m}").lower()
    if not _SELECTOR_RE.match(selector):
        raise DkimKeyError(f"dkim_selector {selector!r} is not a valid DNS label")
    return selector


def _new_entry(directory: Path, entries: list[dict], settings: Settings, algorithm: str,
               now: dt.datetime) -> dict:  # fmt: skip
    base = _base_selector(settings, now)
    if algorithm == ED25519:
        base = f"{base}e"
    taken = {e["selector"] for e in entries}
    selector, n = base, 1
    while selector in taken:  # a rotation within the same month, or a fixed selector
        n += 1
        selector = f"{base}-{n}"
    alg_tag = "ed25519" if algorithm == ED25519 else "rsa"
    filename = f"{selector}.{alg_tag}.pem"
    _write_private(directory / filename, _generate_pem(algorithm), settings)
    return {"selector": selector, "algorithm": algorithm, "file": filename,
            "created": now.isoformat(), "retire_after": None}  # fmt: skip


def _wanted_algorithms(settings: Settings) -> list[str]:
    return [RSA, ED25519] if settings.dkim_ed25519 else [RSA]


def _load(directory: Path, domain: str, entry: dict) -> SigningKey:
    try:
        pem = (directory / entry["file"]).read_bytes()
    except (OSError, KeyError) as exc:
        raise DkimKeyError(f"DKIM key of {domain} cannot be read: {exc}") from exc
    return SigningKey(selector=entry["selector"], domain=domain, algorithm=entry["algorithm"],
                      private_key_pem=pem, created=entry.get("created", ""),
                      retire_after=entry.get("retire_after"))  # fmt: skip


def ensure_keys(settings: Settings, domain: str) -> list[SigningKey]:
    """The domain's signing keys, generating any that are missing (one per wanted
    algorithm). Idempotent and safe to run from several processes at once."""
    name = _check_domain(domain)
    now = _now()
    with _locked(settings, name) as directory:
        entries = _read_index(directory)
        active = {e["algorithm"] for e in entries if not e.get("retire_after")}
        added = [
            _new_entry(directory, entries, settings, alg, now)
            for alg in _wanted_algorithms(settings)
            if alg not in active
        ]
        if added:
            entries += added
            _write_index(directory, entries, settings)
        return [_load(directory, name, e) for e in entries if not e.get("retire_after")
                and e["algorithm"] in _wanted_algorithms(settings)]  # fmt: skip


# Signing keys as last read, per (keys dir, domain, algorithms): every forwarded message
# is sealed, and reading the index and the key file (under the lock) each time cost more
# than the seal's RSA signature. A rotation or a new key rewrites keys.json (a new file,
# by rename), and a key file replaced by hand changes too: either sends the next caller
# back to the files.
_signing_cache: dict[tuple[str, str, tuple[str, ...]], tuple[tuple, list[SigningKey]]] = {}
_signing_lock = threading.Lock()


def _file_name(key: SigningKey) -> str:
    return f"{key.selector}.{'ed25519' if key.algorithm == ED25519 else 'rsa'}.pem"


def _stamp(settings: Settings, domain: str, keys: list[SigningKey]) -> tuple | None:
    # Plain strings, not Path objects: this runs for every signature and seal.
    directory = os.path.join(settings.effective_dkim_keys_dir, _check_domain(domain))
    try:
        stats = [os.stat(os.path.join(directory, name))
                 for name in ["keys.json", *map(_file_name, keys)]]  # fmt: skip
    except OSError:
        return None
    return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in stats)


def signing_keys(settings: Settings, domain: str) -> list[SigningKey]:
    """Keys to sign and seal with now, RSA first (generated on first use)."""
    name = _check_domain(domain)
    cache_key = (settings.effective_dkim_keys_dir, name, tuple(_wanted_algorithms(settings)))
    with _signing_lock:
        cached = _signing_cache.get(cache_key)
    if cached is not None and cached[0] == _stamp(settings, name, cached[1]):
        return list(cached[1])
    keys = sorted(ensure_keys(settings, name), key=lambda k: k.algorithm != RSA)
    stamp = _stamp(settings, name, keys)
    if stamp is not None:
        with _signing_lock:
            _signing_cache[cache_key] = (stamp, keys)
    return list(keys)


def published_keys(settings: Settings, domain: str) -> list[SigningKey]:
    """Keys whose public half belongs in DNS: the signing ones and those rotated out
    less than the overlap period ago (older ones are forgotten here)."""
    name = _check_domain(domain)
    signing = signing_keys(settings, name)
    now = _now()
    with _locked(settings, name) as directory:
        entries = _read_index(directory)
        keep, retiring = [], []
        for entry in entries:
            until = entry.get("retire_after")
            if until and dt.datetime.fromisoformat(until) <= now:
                with contextlib.suppress(OSError):
                    (directory / entry["file"]).unlink()
                continue
            keep.append(entry)
            if until:
                retiring.append(_load(directory, name, entry))
        if len(keep) != len(entries):
            _write_index(directory, keep, settings)
    return signing + retiring


def rotate(settings: Settings, domain: str, overlap_days: int | None = None) -> list[SigningKey]:
    """New signing keys under new selectors; the old ones stay published for the overlap
    period. Returns the new keys (publish them before mail signed with them arrives)."""
    name = _check_domain(domain)
    days = settings.dkim_rotation_overlap_days if overlap_days is None else overlap_days
    now = _now()
    with _locked(settings, name) as directory:
        entries = _read_index(directory)
        until = (now + dt.timedelta(days=days)).isoformat()
        for entry in entries:
            if not entry.get("retire_after"):
                entry["retire_after"] = until
        new = [_new_entry(directory, entries, settings, alg, now)
               for alg in _wanted_algorithms(settings)]  # fmt: skip
        entries += new
        _write_index(directory, entries, settings)
        return [_load(directory, name, e) for e in new]


def known_domains(settings: Settings) -> list[str]:
    """Domains that have a key directory."""
    root = Path(settings.effective_dkim_keys_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "keys.json").exists())


def dkim_sign(settings: Settings, domain: str, message_bytes: bytes,
              headers_to_sign: Sequence[str]) -> bytes | None:  # fmt: skip
    """DKIM-Signature header line(s) for the message, one per signing key, each ending
    in CRLF (relaxed/simple); None when the domain cannot sign (bad name, unreadable key,
    message that dkimpy refuses). Never raises for a bad message: signing is best effort.
    The signing itself is :mod:`aliasd.mailauth.signing`'s."""
    from aliasd.mailauth import signing

    try:
        return b"".join(signing.sign_message(settings, domain, message_bytes, headers_to_sign))
    except signing.Unsigned:
        return None

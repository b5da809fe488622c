"""``aliasd doctor``: is this installation wired the way aliasd expects? Postfix's live
configuration (through ``postconf``) against the lines ``aliasd postfix-config`` prints,
lookupd and the milter answering, the blocklist reload (its command, or the systemd path
unit that reloads Postfix instead), and the DNS of each managed domain and of the
reverse-alias domain (through the configured resolver) against ``aliasd dns``. Each check
is one line: ok, warn or fail, with the fix. Nothing here changes anything."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from aliasd.config import Settings, is_qualified_host_name
from aliasd.db import Database
from aliasd.listen import ListenSpec
from aliasd.mailauth import dns as adns
from aliasd.mailauth import keys, records
from aliasd.postfix.config_lines import sections
from aliasd.systemd_units import RELOAD_PATH_UNIT, UNIT_DIRS, installed_unit, watched_paths

# main.cf parameters without which mail is lost, unscanned or fails SPF, or a bounce
# names the owner's mailbox: a missing one is a failure; the others (timeouts, classes)
# only a warning.
ESSENTIAL = {
    "virtual_alias_maps", "virtual_alias_domains", "smtpd_milters", "milter_default_action",
    "non_smtpd_milters", "internal_mail_filter_classes",
    "header_checks", "smtpd_sender_restrictions", "sender_canonical_maps",
    "recipient_canonical_maps",
}  # fmt: skip
TIMEOUT = 3.0


@dataclass(frozen=True)
class Check:
    status: str  # ok | warn | fail
    name: str
    detail: str = ""
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.name}"
        if self.detail:
            text += f": {self.detail}"
        if self.fix and self.status != "ok":
            text += f" (fix: {self.fix})"
        return text


def _tokens(value: str) -> list[str]:
    return [t for t in re.split(r"[,\s]+", value.strip()) if t]


def _postconf(postfix_dir: str | None) -> dict[str, str] | str:
    """Every main.cf parameter as Postfix sees it, or an error text."""
    exe = shutil.which("postconf") or shutil.which("postconf", path="/usr/sbin:/sbin")
    if exe is None:
        return "postconf not found (is Postfix installed?)"
    cmd = [exe] + (["-c", postfix_dir] if postfix_dir else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"postconf failed: {exc}"
    if proc.returncode != 0:
        return f"postconf failed: {proc.stderr.strip()[:200]}"
    values = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            values[key.strip()] = value.strip()
        elif line.endswith(" ="):
            values[line[:-2].strip()] = ""
    return values


def postfix_checks(settings: Settings, postfix_dir: str | None) -> Iterator[Check]:
    live = _postconf(postfix_dir)
    if isinstance(live, str):
        yield Check("fail", "postfix configuration", live, "install Postfix, or give --postfix-config DIR")
        return
    for section in sections(settings):
        for line in section.lines:
            if line.startswith("#") or " = " not in line:
                continue
            key, _, expected = line.partition(" = ")
            actual = live.get(key, "")
            fix = f"postconf -e '{line}' && postfix reload"
            # an empty value must be empty (nested_header_checks defaults to $header_checks)
            if (all(t in _tokens(actual) for t in _tokens(expected)) if _tokens(expected)
                    else not _tokens(actual)):
                yield Check("ok", key, actual)
            else:
                status = "fail" if key in ESSENTIAL else "warn"
                shown = actual or "(not set)"
                yield Check(status, key, f"is {shown}, expected {expected}", fix)


def _connect(listen: str) -> socket.socket:
    spec = ListenSpec.parse(listen)
    if spec.path:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(TIMEOUT)
        sock.connect(spec.path)
        return sock
    return socket.create_connection((spec.host, spec.port), timeout=TIMEOUT)


def _recv_some(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def lookupd_check(settings: Settings) -> Check:
    if not settings.lookup_socketmap:
        return Check("warn", "lookupd", "lookup_socketmap is empty: not checked")
    fix = "start it: aliasd lookupd (or systemctl start aliasd-lookupd)"
    try:
        with _connect(settings.lookup_socketmap) as sock:
            query = b"virtual doctor-check.invalid"
            sock.sendall(str(len(query)).encode() + b":" + query + b",")
            reply = sock.recv(4096)
    except OSError as exc:
        return Check("fail", "lookupd", f"{settings.lookup_socketmap}: {exc}", fix)
    if re.match(rb"^\d+:(OK|NOTFOUND|TEMP|TIMEOUT|PERM)", reply):
        return Check("ok", "lookupd", f"{settings.lookup_socketmap} answers")
    return Check("fail", "lookupd", f"{settings.lookup_socketmap}: not a socketmap reply", fix)


def milter_handshake(listen: str) -> str | None:
    """None when a milter at ``listen`` answers an option negotiation as Postfix opens
    one; otherwise what went wrong. (A milter that listens but is still loading its
    scanner is not ready: Postfix would wait for it.)"""
    # SMFIC_OPTNEG: version 6, all actions, no protocol steps skipped
    optneg = b"O" + struct.pack("!III", 6, 0x1FF, 0)
    try:
        with _connect(listen) as sock:
            sock.sendall(struct.pack("!I", len(optneg)) + optneg)
            head = _recv_some(sock, 5)
            sock.sendall(struct.pack("!I", 1) + b"Q")
    except OSError as exc:
        return str(exc) or type(exc).__name__
    if len(head) == 5 and head[4:5] == b"O":
        return None
    return "no milter handshake"


def milter_check(settings: Settings) -> Check:
    problem = milter_handshake(settings.milter_listen)
    if problem is None:
        return Check("ok", "milter", f"{settings.milter_listen} answers")
    return Check("fail", "milter", f"{settings.milter_listen}: {problem}",
                 "start it: aliasd milter (or systemctl start aliasd-milter)")


def _systemd_enabled(unit: str) -> bool | None:
    """Whether the running systemd has ``unit`` enabled; None when systemd does not run."""
    systemctl = shutil.which("systemctl")
    if systemctl is None or not os.path.isdir("/run/systemd/system"):
        return None
    try:
        proc = subprocess.run([systemctl, "is-enabled", unit], capture_output=True,
                              text=True, timeout=TIMEOUT)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() in ("enabled", "enabled-runtime")


def _reload_unit_check(settings: Settings, unit_dirs: Sequence[str]) -> Check:
    """With no reload command, the path unit of the production setup reloads Postfix (as
    root) when the table is renamed into place; without it, new blocks wait for a restart."""
    table = os.path.normpath(settings.effective_blocklist_file)
    name = "blocklist reload"
    enable = f"systemctl enable --now {RELOAD_PATH_UNIT}"
    fixes = f"aliasd systemd --write / && {enable}, or set blocklist_reload_command"
    unit = installed_unit(RELOAD_PATH_UNIT, unit_dirs)
    if unit is None:
        return Check("warn", name, f"blocklist_reload_command is empty and {RELOAD_PATH_UNIT} "
                     "is not installed: new blocks apply when Postfix restarts", fixes)
    watched = [os.path.normpath(path) for path in watched_paths(unit.read_text())]
    if table not in watched:
        return Check("warn", name, f"blocklist_reload_command is empty and {unit} watches "
                     f"{', '.join(watched) or 'nothing'}, not {table}: new blocks apply when "
                     "Postfix restarts", fixes)
    # systemctl knows only the units in systemd's own directories
    if tuple(unit_dirs) == UNIT_DIRS and _systemd_enabled(RELOAD_PATH_UNIT) is False:
        return Check("warn", name, f"{RELOAD_PATH_UNIT} is installed but not enabled: new "
                     "blocks apply when Postfix restarts", enable)
    return Check("ok", name, f"{RELOAD_PATH_UNIT} reloads Postfix when {table} changes")


def reload_check(settings: Settings, unit_dirs: Sequence[str] = UNIT_DIRS) -> Check:
    """The blocklist_reload_command, or with none the systemd path unit, that makes
    Postfix read a new blocklist table; ``unit_dirs``: where to look for that unit."""
    command = settings.blocklist_reload_command.strip()
    if not command:
        return _reload_unit_check(settings, unit_dirs)
    try:
        exe = shlex.split(command)[0]
    except ValueError as exc:
        return Check("fail", "blocklist reload", f"cannot parse {command!r}: {exc}")
    if shutil.which(exe) is None:
        return Check("fail", "blocklist reload", f"{exe!r} not found",
                     "install it or change blocklist_reload_command")
    return Check("ok", "blocklist reload", command)


def domain_checks(settings: Settings, domain: str) -> Iterator[Check]:
    label = f"dns {domain}"
    fix = f"publish the records of `aliasd dns {domain}`"
    try:
        mx = [r.exchange.to_text(omit_final_dot=True).lower()
              for r in adns.query(settings, domain, "MX")]  # fmt: skip
        host = records.mail_host(settings)
        if host in mx:
            yield Check("ok", f"{label} MX", host)
        else:
            yield Check("fail", f"{label} MX", f"{mx or 'none'}, expected {host}", fix)
        spf = [t.decode("utf-8", "replace") for t in adns.txt(settings, domain)
               if t.lower().startswith(b"v=spf1")]  # fmt: skip
        yield _spf_check(settings, label, domain, spf, host, fix)
        for key in keys.signing_keys(settings, domain):
            found = [t.decode("utf-8", "replace") for t in adns.txt(settings, key.dns_name)]
            want = key.public_key_b64()
            if any(want in re.sub(r"\s+", "", t) for t in found):
                yield Check("ok", f"{label} DKIM {key.selector}", "matches the signing key")
            else:
                yield Check("fail", f"{label} DKIM {key.selector}",
                            "missing or not the current key", fix)  # fmt: skip
        dmarc = [t for t in adns.txt(settings, f"_dmarc.{domain}") if t.startswith(b"v=DMARC1")]
        if dmarc:
            yield Check("ok", f"{label} DMARC", dmarc[0].decode("utf-8", "replace"))
        else:
            yield Check("warn", f"{label} DMARC", "no record", fix)
    except adns.DnsTemporaryError as exc:
        yield Check("warn", label, f"DNS unreachable ({exc})", "check dns_resolver")
    except keys.DkimKeyError as exc:
        yield Check("fail", f"{label} DKIM", str(exc), f"aliasd dkim rotate {domain}")


def _spf_check(settings, label, domain, spf, host, fix) -> Check:
    if len(spf) != 1:
        return Check("fail", f"{label} SPF", f"{len(spf)} SPF records, expected 1", fix)
    addresses = [r.address for r in adns.query(settings, host, "A")]
    if not addresses:
        return Check("warn", f"{label} SPF", f"{host} has no A record to test with",
                     f"publish an A record for {host}")
    from aliasd.scanner.spf import check_spf

    result = check_spf(addresses[0], f"postmaster@{domain}", host,
                       lookup=adns.spf_lookup(settings), timeout=settings.dns_timeout)
    if result is not None and result.name == "R_SPF_ALLOW":
        return Check("ok", f"{label} SPF", f"passes for {host} ({addresses[0]})")
    return Check("fail", f"{label} SPF", f"does not pass for {host} ({addresses[0]})", fix)


def quarantine_check(settings: Settings, database: Database) -> Check:
    """Past the cap senders get 451 until someone decides: fail there, warn at 90 %."""
    from aliasd.core.quarantine import held_count

    with database.session() as session:
        held = held_count(session)
    cap = settings.quarantine_max_held
    detail = f"{held} of {cap} held"
    fix = "review with `aliasd quarantine list`, or raise quarantine_max_held"
    if held >= cap:
        return Check("fail", "quarantine", detail + ": senders are deferred (451)", fix)
    if held >= cap * 0.9:
        return Check("warn", "quarantine", detail + ": nearly full", fix)
    return Check("ok", "quarantine", detail)


def catch_all_gate_checks(database: Database) -> Iterator[Check]:
    """A catch-all gate stored before gates had to run on RE2 still works, on Python's
    backtracking engine, where a hostile local part can stall the lookup server."""
    from sqlalchemy import select

    from aliasd.core import catch_all_gate
    from aliasd.models import Domain

    with database.session() as session:
        gated = session.execute(
            select(Domain.name, Domain.catch_all_regex)
            .where(Domain.catch_all_regex.is_not(None), Domain.catch_all_regex != "")
            .order_by(Domain.name)
        ).all()
    for name, regex in gated:
        try:
            catch_all_gate.check(regex)
        except catch_all_gate.GateError as exc:
            yield Check("warn", f"{name} catch-all gate", str(exc),
                        f"aliasd domain set {name} --catch-all-regex REGEX (one RE2 can run)")
        else:
            yield Check("ok", f"{name} catch-all gate", regex)


def host_name_check(settings: Settings) -> Check:
    """The name Authentication-Results, MX and SPF give this host must be fully qualified:
    an MX record cannot point at a bare host name."""
    host = records.mail_host(settings)
    source = "authserv_id" if settings.authserv_id else "this host's name (authserv_id unset)"
    if is_qualified_host_name(host):
        return Check("ok", "host name", f"{host}, from {source}")
    return Check("warn", "host name", f"{host!r}, from {source}, is not a fully qualified name",
                 "set authserv_id to this MX host's name, e.g. mx.example.net")


def run_checks(settings: Settings, database: Database, postfix_dir: str | None) -> Iterator[Check]:
    yield from postfix_checks(settings, postfix_dir)
    yield host_name_check(settings)
    yield lookupd_check(settings)
    yield milter_check(settings)
    yield reload_check(settings)
    try:
        from sqlalchemy import select

        from aliasd.models import Domain

        with database.engine.connect() as conn:
            domains = list(conn.scalars(select(Domain.name).order_by(Domain.id)))
    except Exception as exc:  # noqa: BLE001 - a down database is one failed check
        yield Check("fail", "database", str(exc)[:200], "check database_url")
        return
    yield quarantine_check(settings, database)
    yield from catch_all_gate_checks(database)
    if not domains:
        yield Check("warn", "domains", "no managed domain yet", "aliasd domain add DOMAIN --owner USER")
    for domain in records.dns_domains(settings, domains):  # with the reverse-alias domain
        yield from domain_checks(settings, domain)

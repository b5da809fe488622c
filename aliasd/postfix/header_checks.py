"""The Postfix ``header_checks`` pcre table aliasd writes, and the reader for existing ones.

Writing is safe: the new table goes to a file beside the live one, Postfix's own parser
checks it (``postmap -q "Subject: x" pcre:FILE``: postmap only opens a table when asked a
real key, and a pcre table it cannot parse only earns a warning, so any stderr means a
rule would be skipped), then it is renamed over the live file atomically and the
configured reload command runs. A failed check keeps the old file; a failed reload is
reported, never swallowed.

Reading mirrors how Postfix's dict_pcre parses a line, so that a list copied from a web
page (non-breaking spaces, a lost closing delimiter) is diagnosed per line and a repaired
rule is offered."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shlex
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.core.blocking import list_rules, rule_lines
from aliasd.db import Database, get_database

log = logging.getLogger("aliasd.blocklist")

PROBE_KEY = "Subject: x"  # any header line: postmap must be asked something to open the table
_WARNING_LINE = re.compile(r"line (\d+):\s*(.*)")
# Postfix splits on ASCII blanks only; these look like blanks on a web page but are not.
_UNICODE_BLANKS = "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000\ufeff"
_UNICODE_BLANK_RE = re.compile(f"[{_UNICODE_BLANKS}]")
_PCRE_FLAGS = set("imsxAEUX")  # what dict_pcre accepts after the closing delimiter
_ACTION_WORD = re.compile(
    r"(REJECT|DISCARD|DUNNO|OK|IGNORE|HOLD|WARN|INFO|PREPEND|REPLACE|REDIRECT|FILTER|BCC|"
    r"STRIP|PASS|FREEZE|[245]\d\d)\b",
    re.I,
)
_ID_IN_TEXT = re.compile(r"\bid\s*=\s*(\d+)", re.I)
# Headers an imported pattern should not match: if it does, it would refuse ordinary mail.
_ORDINARY_HEADERS = (
    "Received: from mail.example.org (mail.example.org [192.0.2.1]) by mx.example.net",
    "From: Alice Example <alice@example.org>",
    "To: bob@example.net",
    "Subject: hello",
    "Date: Mon, 2 Jan 2023 10:00:00 +0000",
    "Message-ID: <1234@example.org>",
)


class HeaderChecksError(RuntimeError):
    """The new table was refused (the live one is unchanged) or could not be written."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


@dataclass
class WriteResult:
    path: str
    changed: bool
    rules: int
    reloaded: bool = False
    reload_error: str | None = None  # set when the reload command failed

    @property
    def ok(self) -> bool:
        return self.reload_error is None


# --- rendering ----------------------------------------------------------------------
def clean_text(text: str) -> str:
    """A reject text Postfix reads the way it is shown: printable ASCII, single spaces.
    Unicode blanks become spaces; other non-ASCII and control characters are dropped."""
    text = "".join(" " if c.isspace() else c for c in text or "")
    text = "".join(c for c in text if 32 <= ord(c) < 127)
    return " ".join(text.split())


def rule_line(pattern: str, reject_text: str) -> str:
    """``/pattern/ REJECT "text"``, the form mail admins know."""
    text = clean_text(reject_text)
    return f'{pattern} REJECT "{text}"' if text else f"{pattern} REJECT"


def render_table(lines: Iterable[tuple[int, str]]) -> str:
    """The whole file from (rule id, rule line) pairs, in id order for stable diffs."""
    out = [
        "# header_checks written by aliasd; do not edit: use 'aliasd blocklist' or the web page.",
        "# Each rule's reject text carries its stable id.",
    ]
    out += [line for _id, line in sorted(lines)]
    return "\n".join(out) + "\n"


# --- validation with Postfix's own parser ---------------------------------------------
def postfix_client_config_dir(data_dir: str) -> str:
    """A config directory postmap accepts. /etc/postfix when it has a main.cf; otherwise
    (a machine where Postfix was installed with "No configuration") a private one with an
    empty main.cf, since postmap refuses to run without one."""
    if Path("/etc/postfix/main.cf").is_file():
        return "/etc/postfix"
    path = Path(data_dir) / "postfix-client"
    path.mkdir(parents=True, exist_ok=True)
    main_cf = path / "main.cf"
    if not main_cf.exists():
        main_cf.write_text("# minimal config so postmap can run\n")
        _age(str(main_cf))
    return str(path)


def postmap_problems(path: str, config_dir: str) -> list[tuple[int | None, str]]:
    """Every warning or error postmap prints for the pcre table at ``path`` as
    (line number or None, message). Empty: Postfix loads every rule."""
    try:
        proc = subprocess.run(
            ["postmap", "-c", config_dir, "-q", PROBE_KEY, f"pcre:{path}"],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
        )
    except FileNotFoundError as exc:
        return [(None, f"postmap is not installed: {exc}")]
    except subprocess.TimeoutExpired:
        return [(None, "postmap did not answer within 60 s")]
    problems: list[tuple[int | None, str]] = []
    for raw in proc.stderr.splitlines():
        raw = raw.strip()
        if not raw:
            continue
        match = _WARNING_LINE.search(raw)
        if match:
            problems.append((int(match.group(1)), match.group(2)))
        else:
            problems.append((None, raw))
    # 0 = found, 1 = not found; anything else is a failure even without stderr.
    if proc.returncode not in (0, 1) and not problems:
        problems.append((None, f"postmap exited with status {proc.returncode}"))
    return problems


def check_rule_line(line: str, config_dir: str) -> list[str]:
    """Postfix's verdict on one rule line: the problems, empty when it loads."""
    with tempfile.NamedTemporaryFile("w", suffix=".pcre", delete=False, encoding="utf-8") as fh:
        fh.write(line + "\n")
        tmp = fh.name
    _age(tmp)
    try:
        return [msg for _n, msg in postmap_problems(tmp, config_dir)]
    finally:
        os.unlink(tmp)


def _age(path: str) -> None:
    """Date the file 2 s back. Postfix's table loader waits (sleeps) while a file's mtime
    is not yet in the past, taking it for a file still being written; postmap and every
    cleanup process would pause up to 2 s on a just-written table."""
    import time

    past = time.time() - 2
    os.utime(path, (past, past))


# --- safe write -----------------------------------------------------------------------
def write_table(
    path: str,
    content: str,
    *,
    config_dir: str,
    reload_command: str = "",
    force_reload: bool = False,
) -> WriteResult:
    """Validate ``content`` with postmap in a file beside ``path``, rename it into place
    and run ``reload_command``. Raises HeaderChecksError (old file kept) when postmap
    complains. A failed reload is returned in ``reload_error``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    rules = sum(1 for line in content.splitlines() if line.strip() and not line.startswith("#"))
    try:
        unchanged = target.read_text(encoding="utf-8") == content
    except (FileNotFoundError, UnicodeDecodeError):
        unchanged = False
    result = WriteResult(path=str(target), changed=not unchanged, rules=rules)
    if unchanged and not force_reload:
        return result
    if not unchanged:
        # Same directory, so the rename is atomic and Postfix never reads half a file.
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".new", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            _age(tmp)
            problems = postmap_problems(tmp, config_dir)
            if problems:
                lines = content.splitlines()
                shown = []
                for number, message in problems:
                    text = f"line {number}: {message}" if number else message
                    if number and 0 < number <= len(lines):
                        text += f"\n    {lines[number - 1]}"
                    shown.append(text)
                raise HeaderChecksError(
                    f"Postfix refuses the new table; {target} is unchanged", shown
                )
            os.replace(tmp, target)
            tmp = ""
            dir_fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            if tmp and os.path.exists(tmp):
                os.unlink(tmp)
    if reload_command.strip():
        result.reloaded, result.reload_error = run_reload(reload_command)
    return result


def run_reload(command: str) -> tuple[bool, str | None]:
    """Run the reload command; (ran and succeeded, error text when it did not)."""
    try:
        proc = subprocess.run(
            shlex.split(command), capture_output=True, text=True, errors="replace", timeout=60
        )
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        return False, f"reload command {command!r} could not run: {exc}"
    if proc.returncode != 0:
        output = (proc.stderr or proc.stdout).strip()
        return False, f"reload command {command!r} failed (exit {proc.returncode}): {output}"
    return True, None


# --- reading an existing table ------------------------------------------------------------
@dataclass
class ParsedRule:
    line_no: int
    original: str
    body: str  # the pattern between the delimiters, repaired
    flags: str  # repaired flags
    action: str  # the repaired action text, e.g. 'REJECT "Plz stop sending SPAM id= 1 "'
    original_id: int | None  # "id=N" found in the reject text
    problems: list[str] = field(default_factory=list)  # why the original line is defective
    skipped_by_postfix: bool = False  # Postfix ignores the original rule entirely
    too_broad: bool = False  # the repaired rule matches ordinary mail: import disabled

    @property
    def pattern(self) -> str:
        return f"/{self.body}/{self.flags}"

    @property
    def repaired_line(self) -> str:
        return f"{self.pattern} {self.action}".rstrip()

    @property
    def defective(self) -> bool:
        return bool(self.problems)

    @property
    def refuses(self) -> bool:
        """The action refuses mail for good (REJECT or a 5xx code): the only kind aliasd's
        table holds. A WARN, PREPEND, DISCARD ... rule imported as REJECT would change
        what it does, so those are not imported; nor is a 4xx rule, which defers mail
        (the sender retries) where REJECT would bounce it."""
        word = self.action.split(" ", 1)[0].upper()
        return word == "REJECT" or bool(re.fullmatch(r"5\d\d", word))


@dataclass
class ImportReport:
    rules: list[ParsedRule]
    unparsable: list[tuple[int, str]]  # lines no rule could be recovered from

    @property
    def skipped_lines(self) -> list[int]:
        return [r.line_no for r in self.rules if r.skipped_by_postfix]

    @property
    def defective(self) -> list[ParsedRule]:
        return [r for r in self.rules if r.defective]


def split_pattern(line: str) -> tuple[str, str, str, bool]:
    """(body, rest after the closing delimiter, delimiter, closed?) the way dict_pcre
    scans: the first character is the delimiter, a backslash escapes the next one."""
    delim = line[0]
    i = 1
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        if line[i] == delim:
            return line[1:i], line[i + 1 :], delim, True
        i += 1
    return line[1:], "", delim, False


def _repair_unclosed(text: str) -> tuple[str, str]:
    """A pattern that lost its closing delimiter: the body runs up to the blank run before
    the action word (REJECT, ...)."""
    match = re.search(rf"[\s{_UNICODE_BLANKS}]+(?={_ACTION_WORD.pattern})", text)
    if match:
        return text[: match.start()], text[match.end() :]
    return text.rstrip(" \t" + _UNICODE_BLANKS), ""


def _matches_ordinary_mail(body: str, flags: str) -> bool:
    """Whether the pattern (read by Python's re, close to PCRE for such rules) matches a
    header every message carries. Postfix's defaults (pcre_table(5)): case-insensitive and
    dot-matches-newline, each toggled off by the i and s flags."""
    re_flags = 0 if "i" in flags else re.I
    if "s" not in flags:
        re_flags |= re.S
    if "x" in flags:
        re_flags |= re.X
    try:
        rx = re.compile(body, re_flags)
    except re.error:
        return False
    return any(rx.search(h) for h in _ORDINARY_HEADERS)


def parse_table(text: str) -> ImportReport:
    """Read a header_checks pcre table, diagnosing each rule the way Postfix reads it."""
    rules: list[ParsedRule] = []
    unparsable: list[tuple[int, str]] = []
    depth = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            unparsable.append((line_no, "continuation lines are not supported on import"))
            continue
        if stripped.lower().startswith(("if ", "if!", "endif")):
            depth += -1 if stripped.lower().startswith("endif") else 1
            depth = max(depth, 0)
            unparsable.append((line_no, "if/endif blocks are not supported on import"))
            continue
        if depth:
            # Alone, a rule from inside the block would match more than it did there.
            unparsable.append((line_no, "inside an if/endif block"))
            continue
        body, rest, delim, closed = split_pattern(stripped)
        problems: list[str] = []
        skipped = False
        if not closed:
            skipped = True
            problems.append(f'no closing regexp delimiter "{delim}": Postfix ignores this rule')
            body, rest = _repair_unclosed(body)
            flags = ""
        else:
            flag_match = re.match(r"[^ \t]*", rest)
            raw_flags = flag_match.group(0) if flag_match else ""
            rest = rest[len(raw_flags) :]
            # What Postfix took as flags may really be blanks from a web page, then text.
            clean_flags = _UNICODE_BLANK_RE.split(raw_flags, maxsplit=1)
            flags = clean_flags[0]
            if len(clean_flags) > 1:
                rest = " " + clean_flags[1] + rest
            bad = [c for c in raw_flags if c not in _PCRE_FLAGS]
            if bad:
                skipped = True
                if any(_UNICODE_BLANK_RE.match(c) for c in bad):
                    problems.append(
                        "a non-breaking space follows the closing delimiter; Postfix reads it "
                        "as an unknown regexp option and skips this rule"
                    )
                else:
                    problems.append(
                        f"unknown regexp option {''.join(bad)!r}: Postfix skips this rule"
                    )
                flags = "".join(c for c in flags if c in _PCRE_FLAGS)
        if _UNICODE_BLANK_RE.search(body):
            problems.append(
                "the pattern contains a non-breaking space, which only matches that exact "
                "character; repaired to a plain space"
            )
            body = _UNICODE_BLANK_RE.sub(" ", body)
        if delim != "/":
            body = re.sub(r"(?<!\\)/", r"\\/", body.replace("\\" + delim, delim))
        action = clean_text(rest)
        if _UNICODE_BLANK_RE.search(rest) and not skipped:
            word = rest.strip(" \t").split(" ")[0] if rest.strip(" \t") else ""
            if _UNICODE_BLANK_RE.search(word):
                problems.append(
                    "non-breaking spaces in the action: Postfix loads the rule but cleanup "
                    "does not recognise the action word, so matching mail is not refused"
                )
        if not action:
            problems.append("the rule has no action")
            action = "REJECT"
        original_id = None
        id_match = _ID_IN_TEXT.search(action)
        if id_match:
            original_id = int(id_match.group(1))
        if not body:
            unparsable.append((line_no, "empty pattern"))
            continue
        rule = ParsedRule(
            line_no=line_no,
            original=line,
            body=body,
            flags=flags,
            action=action,
            original_id=original_id,
            problems=problems,
            skipped_by_postfix=skipped,
        )
        rule.too_broad = _matches_ordinary_mail(body, flags)
        if rule.too_broad:
            rule.problems.append(
                "the repaired pattern matches headers every message has (e.g. Received: "
                "from ...); imported disabled, review it before enabling"
            )
        rules.append(rule)
    return ImportReport(rules=rules, unparsable=unparsable)


def apply_postfix_verdict(report: ImportReport, problems: list[tuple[int | None, str]]) -> None:
    """Mark rules Postfix itself skipped (postmap's warnings on the original file are the
    authority; the local parser only explains and repairs)."""
    by_line = {r.line_no: r for r in report.rules}
    for number, message in problems:
        rule = by_line.get(number or -1)
        if rule is None:
            continue
        if not rule.skipped_by_postfix:
            rule.skipped_by_postfix = True
            rule.problems.insert(0, f"Postfix: {message}")


# --- the table aliasd keeps in step with the database ----------------------------------------
def render_from_database(session: Session) -> str:
    rules = list_rules(session, enabled_only=True)
    return render_table((rid, rule_line(pattern, text)) for rid, pattern, text in rule_lines(rules))


def sync_blocklist(
    settings: Settings, database: Database | None = None, *, force_reload: bool = False
) -> WriteResult:
    """Write the enabled rules to settings' header_checks file (validated, atomic) and run
    the reload command when the file changed. Raises HeaderChecksError when Postfix
    refuses the table (the live file is kept)."""
    db = database or get_database(settings)
    path = Path(settings.effective_blocklist_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The milter, web workers and the CLI all write this file: one writer at a time, each
    # reading the rules inside the lock, so an older read never lands after a newer one.
    with _sync_lock, open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with db.session() as session:
            content = render_from_database(session)
        return write_table(
            settings.effective_blocklist_file,
            content,
            config_dir=postfix_client_config_dir(settings.data_dir),
            reload_command=settings.blocklist_reload_command,
            force_reload=force_reload,
        )


_sync_lock = threading.RLock()
_pending: dict[str, object] = {}
_pending_lock = threading.Lock()
last_results: dict[str, WriteResult | Exception] = {}  # per file: what the last sync did


def request_sync(settings: Settings) -> None:
    """Rewrite the table soon in a background thread; requests arriving while a sync
    runs are folded into one more run. Outcomes are logged (a failed check or reload is
    an error in the log, never silent) and kept in ``last_results``."""
    key = settings.effective_blocklist_file
    with _pending_lock:
        already = key in _pending
        _pending[key] = settings
        if already:
            return
    threading.Thread(target=_sync_worker, args=(key,), name="aliasd-blocklist-sync", daemon=True).start()


def _sync_worker(key: str) -> None:
    while True:
        with _pending_lock:
            settings = _pending.get(key)
            if settings is None:
                return
            _pending[key] = None  # later requests set it again
        try:
            result = sync_blocklist(settings)
            last_results[key] = result
            if result.reload_error:
                log.error("blocklist written to %s but %s", key, result.reload_error)
            elif result.changed:
                log.info("blocklist written to %s (%d rules)", key, result.rules)
        except Exception as exc:  # logged: the milter must keep running
            last_results[key] = exc
            problems = getattr(exc, "problems", [])
            log.error("blocklist not written to %s: %s %s", key, exc, "; ".join(problems))
        with _pending_lock:
            if _pending.get(key) is None:
                _pending.pop(key, None)
                return


def wait_for_sync(settings: Settings, timeout: float = 30.0) -> WriteResult | Exception | None:
    """Block until no background sync is pending for settings' file (tests, CLI)."""
    import time

    key = settings.effective_blocklist_file
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _pending_lock:
            if key not in _pending:
                return last_results.get(key)
        time.sleep(0.02)
    raise TimeoutError(f"blocklist sync for {key} still pending after {timeout} s")


# --- hits, from Postfix's log -------------------------------------------------------------------
# cleanup logs each refusal: "QID: reject: header From: x@y from host[ip]; from=<..> to=<..>
# proto=ESMTP helo=<..>: 5.7.1 "Plz stop sending SPAM id=1"" (the text after REJECT, as is).
_HEADER_REJECT = re.compile(r": reject: header .*: \d\.\d\.\d (?P<text>.*)$")


def count_log_hits(lines: Iterable[str], texts: dict[str, int]) -> dict[int, int]:
    """Rule id → refusals in ``lines``; ``texts`` maps each rule's logged text to its id."""
    hits: dict[int, int] = {}
    for line in lines:
        match = _HEADER_REJECT.search(line)
        if not match:
            continue
        rule_id = texts.get(match.group("text").strip())
        if rule_id is not None:
            hits[rule_id] = hits.get(rule_id, 0) + 1
    return hits


def collect_log_hits(
    settings: Settings, maillog: str, database: Database | None = None
) -> dict[int, int]:
    """Add the header_checks refusals logged in ``maillog`` since the last call to the
    rules' hit counters (the read position is kept in data_dir, and starts over when the
    log was rotated). Returns what was added."""
    import json

    from aliasd.core.blocking import record_hits

    db = database or get_database(settings)
    state_path = Path(settings.data_dir) / "maillog-hits.json"
    try:
        state = json.loads(state_path.read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    with open(maillog, "rb") as fh:
        st = os.fstat(fh.fileno())
        head = fh.read(256)
        same = state.get("inode") == st.st_ino and state.get("head") == hashlib.sha256(
            head[: int(state.get("head_len", 0))]
        ).hexdigest()  # same inode may be a new file after rotation: compare its start
        offset = int(state.get("offset", 0)) if same else 0
        if offset > st.st_size:  # truncated in place
            offset = 0
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1  # complete lines only; the rest is read next time
    lines = data[:end].decode("utf-8", "replace").splitlines()
    with db.session() as session:
        texts: dict[str, int] = {}
        for rule in list_rules(session):
            text = clean_text(rule.reject_text)
            texts[f'"{text}"'] = rule.id
            texts.setdefault(text, rule.id)
        hits = count_log_hits(lines, texts)
        if hits:
            record_hits(session, hits)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps({
        "path": maillog, "inode": st.st_ino, "offset": offset + end,
        "head_len": len(head), "head": hashlib.sha256(head).hexdigest(),
    }))  # fmt: skip
    return hits

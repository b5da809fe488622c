"""Asking Postfix's own pcre parser: postmap on a table file.

postmap only opens a table when asked a real key, and a pcre table it cannot parse only
earns a warning (the rule is skipped), so a table is checked by querying it and any
stderr means a rule would be lost."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

PROBE_KEY = "Subject: x"  # any header line: postmap must be asked something to open the table
_WARNING_LINE = re.compile(r"line (\d+):\s*(.*)")


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
        age_file(str(main_cf))
    return str(path)


def age_file(path: str) -> None:
    """Date the file 2 s back. Postfix's table loader waits (sleeps) while a file's mtime
    is not yet in the past, taking it for a file still being written; postmap and every
    cleanup process would pause up to 2 s on a just-written table."""
    past = time.time() - 2
    os.utime(path, (past, past))


def _postmap(config_dir: str, path: str, key: str, stdin: str | None = None):
    return subprocess.run(
        ["postmap", "-c", config_dir, "-q", key, f"pcre:{path}"],
        input=stdin, capture_output=True, text=True, errors="replace", timeout=60,
    )  # fmt: skip


def postmap_problems(path: str, config_dir: str) -> list[tuple[int | None, str]]:
    """Every warning or error postmap prints for the pcre table at ``path`` as
    (line number or None, message). Empty: Postfix loads every rule."""
    try:
        proc = _postmap(config_dir, path, PROBE_KEY)
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


def write_temp_table(lines: Sequence[str]) -> str:
    """A throw-away pcre file holding ``lines``, already aged; the caller unlinks it."""
    with tempfile.NamedTemporaryFile("w", suffix=".pcre", delete=False, encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
        tmp = fh.name
    age_file(tmp)
    return tmp


def check_rule_line(line: str, config_dir: str) -> list[str]:
    """Postfix's verdict on one rule line: the problems, empty when it loads."""
    tmp = write_temp_table([line])
    try:
        return [msg for _n, msg in postmap_problems(tmp, config_dir)]
    finally:
        os.unlink(tmp)


def query_keys(path: str, keys: Sequence[str], config_dir: str) -> dict[str, str]:
    """``postmap -q -``: the value Postfix finds for each key that matches a rule."""
    proc = _postmap(config_dir, path, "-", stdin="".join(k + "\n" for k in keys))
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"postmap failed (exit {proc.returncode}): {proc.stderr.strip()}")
    found: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("\t")
        if sep:
            found[key] = value
    return found

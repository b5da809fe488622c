"""Writing the header_checks file safely, then telling Postfix.

The new table goes to a file beside the live one, Postfix's own parser checks it, then
it is renamed over the live file atomically (Postfix never reads half a file) and the
configured reload command runs."""

from __future__ import annotations

import os
import pty
import select
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aliasd.postfix.postmap import age_file, postmap_problems

RELOAD_TIMEOUT = 60.0


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
        _replace_checked(target, content, config_dir)
    if reload_command.strip():
        result.reloaded, result.reload_error = run_reload(reload_command)
    return result


def _replace_checked(target: Path, content: str, config_dir: str) -> None:
    # Same directory, so the rename is atomic.
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".new", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        age_file(tmp)
        problems = postmap_problems(tmp, config_dir)
        if problems:
            lines = content.splitlines()
            shown = []
            for number, message in problems:
                text = f"line {number}: {message}" if number else message
                if number and 0 < number <= len(lines):
                    text += f"\n    {lines[number - 1]}"
                shown.append(text)
            raise HeaderChecksError(f"Postfix refuses the new table; {target} is unchanged", shown)
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


def run_reload(command: str) -> tuple[bool, str | None]:
    """Run the reload command; (ran and succeeded, error text when it did not). The
    error carries what the command printed: its output runs on a pseudo-terminal,
    because postfix(1) writes its messages to stderr only when that is a terminal (to a
    pipe it says nothing, and the reason would be lost in the mail log)."""
    try:
        argv = shlex.split(command)
        code, output = _run_on_terminal(argv, RELOAD_TIMEOUT)
    except (OSError, ValueError) as exc:
        return False, f"reload command {command!r} could not run: {exc}"
    except subprocess.TimeoutExpired:
        return False, f"reload command {command!r} did not finish within {RELOAD_TIMEOUT:.0f} s"
    if code != 0:
        said = output or "it printed nothing; see Postfix's mail log"
        return False, f"reload command {command!r} failed (exit {code}): {said}"
    return True, None


def _run_on_terminal(argv: list[str], timeout: float) -> tuple[int, str]:
    """(exit status, output) of ``argv`` with stdout and stderr on a new pty."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal, close_fds=True
        )
    finally:
        os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.wait()
                raise subprocess.TimeoutExpired(argv, timeout)
            ready, _, _ = select.select([controller], [], [], min(left, 0.5))
            if ready:
                try:
                    data = os.read(controller, 65536)
                except OSError:  # EIO: every holder of the terminal has closed it
                    break
                if not data:
                    break
                if sum(map(len, chunks)) < 65536:  # keep the start; enough to explain
                    chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(controller)
    code = proc.wait()
    text = b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")
    return code, " ".join(text.split())[:2000]

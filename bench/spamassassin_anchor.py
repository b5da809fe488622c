"""SpamAssassin itself on the same splits as ``bench/accuracy.py --time`` and ``--logo``:
the anchor the bundled scanner is compared with, measured on the same unseen mail
instead of quoted.

Debian's SpamAssassin (package ``spamassassin``, the rules it ships in
/usr/share/spamassassin), local tests only (``-L``: no DNS lists, Razor, Pyzor or DCC, as
the bundled scanner runs), Bayes on, learned with ``sa-learn`` on exactly the messages
``bench/accuracy.py`` learns (auto-learn off), in a private home directory; then each
test message is scanned (``spamassassin --mbox``, one process per core over a share of
the messages). Spam is SpamAssassin's own verdict (score >= required_score, 5.0).
Printed per corpus group, validation and report halves apart, by the same hash.

    python bench/spamassassin_anchor.py [--split time|spam-2|GROUP] [--jobs 2] [--limit N]
                                        [--dump FILE]

Takes some minutes: SpamAssassin reads a message in about 0.1-0.3 s on one core.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import mailbox
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import Sample, bucket, group_of, load, logo_splits, time_split  # noqa: E402

PREFS = """\
use_bayes 1
bayes_auto_learn 0
skip_rbl_checks 1
use_razor2 0
use_pyzor 0
report_safe 0
"""
_STATUS = re.compile(r"^(Yes|No),\s*score=(-?[\d.]+)\s+required=(-?[\d.]+)", re.I)
_TESTS = re.compile(r"tests=(\S*)")
ID_HEADER = b"X-Anchor-Index"


def write_mbox(path: Path, samples: list[Sample]) -> None:
    box = mailbox.mbox(str(path), create=True)
    try:
        for s in samples:
            box.add(mailbox.mboxMessage(s.raw))
    finally:
        box.close()


def run(home: Path, *args: str, stdin: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(home)}
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as fh:
        return subprocess.run(list(args), env=env, stdin=fh, capture_output=True, check=False)


def learn(home: Path, train: list[Sample]) -> None:
    for is_spam in (True, False):
        box = home / ("learn-spam.mbox" if is_spam else "learn-ham.mbox")
        write_mbox(box, [s for s in train if s.is_spam is is_spam])
        proc = run(home, "sa-learn", "-L", "--no-sync", "--mbox",
                   "--spam" if is_spam else "--ham", str(box))  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"sa-learn failed: {proc.stderr.decode(errors='replace')[-500:]}")
    run(home, "sa-learn", "--sync")
    dump = run(home, "sa-learn", "--dump", "magic").stdout.decode(errors="replace")
    nspam = re.search(r"(\d+)\s+0\s+non-token data: nspam", dump)
    nham = re.search(r"(\d+)\s+0\s+non-token data: nham", dump)
    print(f"  sa-learn: nspam {nspam.group(1) if nspam else '?'}, nham {nham.group(1) if nham else '?'}")


Result = tuple[Sample, bool, float, list[str]]  # message, spam, score, the rules that hit


def scan_share(home: Path, samples: list[Sample], index: int) -> list[Result]:
    # SpamAssassin's mbox reader sorts the messages by date: each carries its index in a
    # header of its own (never learned, so Bayes ignores it) to be matched by
    box = home / f"scan-{index}.mbox"
    write_mbox(box, [Sample(s.name, s.is_spam, b"%s: %d\n" % (ID_HEADER, i) + s.raw)
                     for i, s in enumerate(samples)])  # fmt: skip
    proc = run(home, "spamassassin", "-L", "--mbox", stdin=box)
    if proc.returncode != 0:
        raise RuntimeError(f"spamassassin failed: {proc.stderr.decode(errors='replace')[-500:]}")
    out = home / f"scanned-{index}.mbox"
    out.write_bytes(proc.stdout)
    found: dict[int, Result] = {}
    for msg in mailbox.mbox(str(out)):
        ident = str(msg.get(ID_HEADER.decode(), "")).strip()
        if not ident.isdigit() or int(ident) >= len(samples):
            raise RuntimeError(f"a scanned message without its {ID_HEADER.decode()} header")
        s = samples[int(ident)]
        # folded over several lines, also inside the list of tests (after a comma)
        status = re.sub(r",\s+", ",", " ".join(str(msg.get("X-Spam-Status", "")).split()))
        m = _STATUS.match(status)
        if not m:
            raise RuntimeError(f"no X-Spam-Status on {s.name}: {status[:80]!r}")
        tests = _TESTS.search(status)
        hits = [t for t in (tests.group(1) if tests else "").split(",") if t]
        found[int(ident)] = (s, m.group(1).lower() == "yes", float(m.group(2)), hits)
    if len(found) != len(samples):
        raise RuntimeError(f"spamassassin returned {len(found)} of {len(samples)} messages")
    return [found[i] for i in range(len(samples))]


def scan(home: Path, samples: list[Sample], jobs: int) -> list[Result]:
    shares = [samples[i::jobs] for i in range(jobs)]
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        parts = list(pool.map(scan_share, [home] * jobs, shares, range(jobs)))
    return [r for part in parts for r in part]


def report(label: str, results: list[Result]) -> None:
    for half, keep in (("validation", lambda b: b < 2), ("report", lambda b: b >= 2)):
        per: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
        for s, spam, _, _ in results:
            if keep(bucket(s.name, "time:")):
                per[group_of(s)][0] += spam
                per[group_of(s)][1] += 1
        cells = []
        for g, (flagged, n) in sorted(per.items()):
            what = "FP" if "ham" in g else "recall"
            cells.append(f"{g} {what} {100.0 * flagged / n:.1f}% ({flagged}/{n})")
        print(f"  {label}, {half} half: " + "; ".join(cells))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", action="append", help="time, or a group to leave out (default: time and spam-2)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--limit", type=int, default=0, help="scan at most this many per group (quick runs)")
    ap.add_argument("--dump", help="write one JSON line per scanned message (score, rules hit)")
    args = ap.parse_args()
    if not shutil.which("spamassassin") or not shutil.which("sa-learn"):
        print("SpamAssassin is not installed (Debian package spamassassin)", file=sys.stderr)
        return 2
    version = run(Path("/"), "spamassassin", "--version").stdout.decode().splitlines()[0]
    print(f"{version}, local tests only, Bayes learned with sa-learn; spam = score >= required")
    samples = load()
    splits = {"time": time_split(samples)}
    for group, train, test in logo_splits(samples):
        splits[group] = (train, test, [])
    for name in args.split or ["time", "spam-2"]:
        if name not in splits:
            print(f"unknown split {name!r}: time or one of {', '.join(k for k in splits if k != 'time')}",
                  file=sys.stderr)
            return 2
        train, *tests = splits[name]
        test = [s for part in tests for s in part]
        if args.limit:
            per: dict[str, list[Sample]] = collections.defaultdict(list)
            for s in test:
                per[group_of(s)].append(s)
            test = [s for group in per.values() for s in group[: args.limit]]
        label = "time-shifted" if name == "time" else f"{name} left out"
        home = Path(tempfile.mkdtemp(prefix="aliasd-sa-anchor-"))
        try:
            (home / ".spamassassin").mkdir()
            (home / ".spamassassin" / "user_prefs").write_text(PREFS)
            started = time.perf_counter()
            print(f"{label}: learning {len(train)}, scanning {len(test)}")
            learn(home, train)
            results = scan(home, test, max(1, args.jobs))
            print(f"  ({time.perf_counter() - started:.0f} s)")
            report(label, results)
            if args.dump:
                with open(args.dump, "a") as fh:
                    for s, spam, score, hits in results:
                        fh.write(json.dumps({"split": name, "name": s.name, "spam": s.is_spam,
                                             "flagged": spam, "score": score, "tests": hits}) + "\n")
        finally:
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

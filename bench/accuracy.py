"""Accuracy of the bundled scanner on the SpamAssassin public corpus.

    python bench/accuracy.py            # learn the 80 %, scan the 20 %
    python bench/accuracy.py --tune     # learn/scan inside the 80 % only (for tuning)
    python bench/accuracy.py --cv       # 5-fold cross-validation inside the 80 % (for tuning)
    python bench/accuracy.py --time     # learn the older groups, scan the newer ones
    python bench/accuracy.py --logo     # leave one group out, five times
    ... --spamassassin off|content|all  # SpamAssassin's rules (default: content, as the scanner)

Prints the false-positive rate on ham and spam recall at the default thresholds
(spam = action 'add header' or worse), against the anchors the scanner is judged by."""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import bucket, cv_folds, group_of, load, logo_splits, split, time_split, tuning_split  # noqa: E402

from aliasd.config import load_settings  # noqa: E402
from aliasd.db import Database  # noqa: E402
from aliasd.scanner.bundled import BundledScanner  # noqa: E402
from aliasd.scanner.message import parse_message  # noqa: E402
from aliasd.scanner.result import ScanRequest  # noqa: E402

ANCHORS = [("rspamd 3.4 rules + Bayes", 0.48, 90.8), ("SpamAssassin 4.0 rules + Bayes", 0.48, 95.0)]
TARGET = (0.25, 96.0)
EXTRA_RULES: list[str] = []  # --rules
SA_MODE = "content"  # --spamassassin


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tune", action="store_true", help="validate inside the training 80 %%")
    ap.add_argument("--db", default="", help="database URL (default: a temporary SQLite file)")
    ap.add_argument("--dump", default="", help="write one JSON line per scanned message")
    ap.add_argument("--show", type=int, default=0, help="print this many misclassified names")
    ap.add_argument("--cv", action="store_true", help="5-fold cross-validation inside the 80 %%")
    ap.add_argument("--time", action="store_true",
                    help="learn easy-ham-1 + spam-1, scan easy-ham-2, hard-ham-1, spam-2")
    ap.add_argument("--logo", action="store_true", help="leave one group out, for each group")
    ap.add_argument("--rules", action="append", default=[],
                    help="extra rule file or directory (scanner_rules), e.g. /usr/share/spamassassin")
    ap.add_argument("--spamassassin", choices=("off", "content", "scored", "all"), default="content",
                    help="SpamAssassin's rules from /usr/share/spamassassin (scanner_spamassassin)")
    ap.add_argument("--group", default="", help="with --logo: leave out only this group")
    ap.add_argument("--limit", type=int, default=0, help="scan at most this many per group (quick runs)")
    args = ap.parse_args()
    global EXTRA_RULES, SA_MODE
    EXTRA_RULES = list(args.rules)
    SA_MODE = args.spamassassin

    samples = load()
    train, test = split(samples)
    if args.cv:
        return cross_validate(train, args.dump)
    if args.time:
        return time_shifted(samples, args)
    if args.logo:
        return leave_one_group_out(samples, args)
    if args.tune:
        train, test = tuning_split(train)
    tmp = tempfile.mkdtemp(prefix="aliasd-bench-")
    url = args.db or f"sqlite:///{tmp}/bench.db"
    db = Database(url, timeout=60)
    db.upgrade()
    settings = load_settings(environ={}, data_dir=tmp, database_url=url, scanner_rules=EXTRA_RULES,
                                         scanner_spamassassin=SA_MODE)
    scanner = BundledScanner(settings, db)

    t0 = time.perf_counter()
    outcomes = learn(scanner, train)
    t_learn = time.perf_counter() - t0

    t0 = time.perf_counter()
    dump = open(args.dump, "w") if args.dump else None  # noqa: SIM115
    fp, fn, hams, spams = [], [], 0, 0
    symbol_hits: collections.Counter[tuple[str, bool]] = collections.Counter()
    for s in test:
        r = scanner.scan(ScanRequest(message=s.raw, envelope_from=s.envelope_from))
        if dump:
            write_dump_line(dump, "test", s, r, scanner)
        for name in r.symbol_names():
            symbol_hits[(name, s.is_spam)] += 1
        if s.is_spam:
            spams += 1
            if not r.is_spam:
                fn.append((s.name, r))
        else:
            hams += 1
            if r.is_spam:
                fp.append((s.name, r))
    t_scan = time.perf_counter() - t0
    scanner.close()

    fp_rate = 100.0 * len(fp) / max(hams, 1)
    recall = 100.0 * (spams - len(fn)) / max(spams, 1)
    print(f"corpus: {len(samples)} messages after Message-ID de-duplication; "
          f"learned {len(train)} ({dict(outcomes)}) in {t_learn:.1f}s; "
          f"scanned {len(test)} ({hams} ham, {spams} spam) in {t_scan:.1f}s"
          + (" [tuning split inside the 80 %]" if args.tune else ""))
    print(f"aliasd bundled: FP {fp_rate:.2f}% ({len(fp)}/{hams} ham), "
          f"recall {recall:.1f}% ({spams - len(fn)}/{spams} spam)")
    for name, afp, arec in ANCHORS:
        print(f"anchor {name}: FP {afp:.2f}%, recall {arec:.1f}%")
    ok = fp_rate <= TARGET[0] and recall >= TARGET[1]
    print(f"target FP <= {TARGET[0]}%, recall >= {TARGET[1]}%: {'met' if ok else 'NOT met'}")
    if args.show:
        print("symbol hits (ham, spam):")
        names = sorted({n for n, _ in symbol_hits})
        for n in names:
            print(f"  {n:24s} {symbol_hits[(n, False)]:5d} {symbol_hits[(n, True)]:5d}")
        for label, items in (("false positives", fp), ("missed spam", fn)):
            print(label + ":")
            for name, r in items[: args.show]:
                print(f"  {name} {r.score:.2f} {r.spamd_result_header()[:300]}")
    db.dispose()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def learn(scanner: BundledScanner, train: list) -> collections.Counter[str]:
    outcomes: collections.Counter[str] = collections.Counter()
    for is_spam in (True, False):
        batch = [s.raw for s in train if s.is_spam is is_spam]
        for i in range(0, len(batch), 500):
            outcomes.update(o.value for o in scanner.learn_many(batch[i : i + 500], is_spam))
    return outcomes


def fresh_scanner() -> tuple[BundledScanner, Database, str]:
    tmp = tempfile.mkdtemp(prefix="aliasd-bench-")
    url = f"sqlite:///{tmp}/bench.db"
    db = Database(url, timeout=60)
    db.upgrade()
    return BundledScanner(load_settings(environ={}, data_dir=tmp, database_url=url, scanner_rules=EXTRA_RULES,
                                         scanner_spamassassin=SA_MODE), db), db, tmp


def write_dump_line(dump, label: str, sample, result, scanner: BundledScanner) -> None:
    """One scanned message for ``--dump``: its verdict, symbols and what Bayes computed
    (both tail probabilities, to try Bayes' symbol constants offline)."""
    v = scanner.bayes.classify(parse_message(sample.raw), 1)
    dump.write(json.dumps({
        "set": label, "name": sample.name, "spam": sample.is_spam, "score": result.score,
        "p": v.probability if v else 0.5, "k": v.tokens_used if v else 0,
        "log_ratio": v.log_ratio if v else 0.0, "log_q_spam": v.log_q_spam if v else 0.0,
        "symbols": {x.name: x.score for x in result.symbols},
        "options": {x.name: list(x.options) for x in result.symbols if x.options}}) + "\n")


def limited(samples: list, limit: int) -> list:
    if not limit:
        return samples
    per: dict[str, list] = collections.defaultdict(list)
    for s in samples:
        per[group_of(s)].append(s)
    return [s for group in per.values() for s in group[:limit]]


def scan_groups(train: list, tests: dict[str, list], dump) -> dict[str, dict[str, tuple[int, int]]]:
    """Learn ``train`` once, scan each named test set; per set and corpus group
    (flagged, scanned)."""
    scanner, db, tmp = fresh_scanner()
    try:
        learn(scanner, train)
        scanner.bayes.load_snapshot()
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for label, samples in tests.items():
            per: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
            for s in samples:
                r = scanner.scan(ScanRequest(message=s.raw, envelope_from=s.envelope_from))
                per[group_of(s)][0] += r.is_spam
                per[group_of(s)][1] += 1
                if dump:
                    write_dump_line(dump, label, s, r, scanner)
            out[label] = {g: (a, b) for g, (a, b) in sorted(per.items())}
        return out
    finally:
        scanner.close()
        db.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def print_groups(label: str, per: dict[str, tuple[int, int]]) -> None:
    ham = [v for g, v in per.items() if "ham" in g]
    spam = [v for g, v in per.items() if "spam" in g]
    cells = []
    for g, (flagged, n) in per.items():
        if "ham" in g:
            cells.append(f"{g} FP {100.0 * flagged / n:.2f}% ({flagged}/{n})")
        else:
            cells.append(f"{g} recall {100.0 * flagged / n:.1f}% ({flagged}/{n})")
    total = []
    if ham:
        f, n = sum(a for a, _ in ham), sum(b for _, b in ham)
        total.append(f"FP {100.0 * f / n:.2f}% ({f}/{n})")
    if spam:
        f, n = sum(a for a, _ in spam), sum(b for _, b in spam)
        total.append(f"recall {100.0 * f / n:.1f}% ({f}/{n})")
    print(f"{label}: {', '.join(total)}\n    " + "; ".join(cells))


def time_shifted(samples: list, args) -> int:
    """Learn the older groups, scan the newer: validation half (where constants may be
    chosen) and report half (never used for a choice) printed apart."""
    train, val, report = time_split(samples)
    dump = open(args.dump, "w") if args.dump else None  # noqa: SIM115
    t0 = time.perf_counter()
    res = scan_groups(train, {"validation": limited(val, args.limit),
                              "report": limited(report, args.limit)}, dump)
    print(f"time-shifted: learned {len(train)} (easy-ham-1 + spam-1) in {time.perf_counter() - t0:.0f}s")
    print_groups("  validation half (for choosing constants)", res["validation"])
    print_groups("  report half (never tuned on)", res["report"])
    both = {g: tuple(a + b for a, b in zip(res["validation"].get(g, (0, 0)), res["report"].get(g, (0, 0)),
                                             strict=True)) for g in res["report"]}
    print_groups("  all newer mail", both)
    return 0


def leave_one_group_out(samples: list, args) -> int:
    dump = open(args.dump, "w") if args.dump else None  # noqa: SIM115
    print("leave one group out: learn the other four groups, scan the one left out "
          "(validation half | report half, by the hash time_split uses)")
    for group, train, test in logo_splits(samples):
        if args.group and group != args.group:
            continue
        val = [s for s in test if bucket(s.name, "time:") < 2]
        report = [s for s in test if bucket(s.name, "time:") >= 2]
        res = scan_groups(train, {"validation": limited(val, args.limit),
                                  "report": limited(report, args.limit)}, dump)
        print_groups(f"  {group} left out, validation", res["validation"])
        print_groups(f"  {group} left out, report", res["report"])
    return 0


def cross_validate(train: list, dump_path: str = "") -> int:
    """Learn four folds of the 80 %, scan the fifth, five times; sum the errors."""
    fp = fn = hams = spams = 0
    dump = open(dump_path, "w") if dump_path else None  # noqa: SIM115
    for learn_set, scan_set in cv_folds(train):
        tmp = tempfile.mkdtemp(prefix="aliasd-bench-cv-")
        url = f"sqlite:///{tmp}/bench.db"
        db = Database(url, timeout=60)
        db.upgrade()
        scanner = BundledScanner(load_settings(environ={}, data_dir=tmp, database_url=url, scanner_rules=EXTRA_RULES,
                                         scanner_spamassassin=SA_MODE), db)
        learn(scanner, learn_set)
        for s in scan_set:
            r = scanner.scan(ScanRequest(message=s.raw, envelope_from=s.envelope_from))
            spam = r.is_spam
            if dump:
                write_dump_line(dump, "cv", s, r, scanner)
            if s.is_spam:
                spams += 1
                fn += not spam
            else:
                hams += 1
                fp += spam
        scanner.close()
        db.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"5-fold cross-validation inside the 80 % ({len(train)} messages): "
          f"FP {100.0 * fp / hams:.2f}% ({fp}/{hams} ham), "
          f"recall {100.0 * (spams - fn) / spams:.1f}% ({spams - fn}/{spams} spam)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scan speed: the bundled scanner in one process vs Debian's rspamd (/checkv2, one
normal worker, no network checks) on the same messages, in the same run.

    python bench/scan_speed.py [--rounds N] [--spamassassin off|content|all]

Both learn the same 80 % of the SpamAssassin corpus (rspamd through its controller,
Bayes in a private redis), then scan the other 20 %, one message at a time (rspamd over
one kept-alive HTTP connection). The bundled scanner and rspamd rules-only take turns,
N passes each, and each is rated by its best pass (the machine's load moves; taking
turns exposes both to the same). Prints messages/s and the ratio; the rspamd figures
also give its FP rate/recall on the same split for comparison."""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from corpus import load, split  # noqa: E402

from aliasd.config import load_settings  # noqa: E402
from aliasd.db import Database  # noqa: E402
from aliasd.scanner.bundled import BundledScanner  # noqa: E402
from aliasd.scanner.result import ScanRequest  # noqa: E402
from aliasd.scanner.rspamd import RspamdScanner  # noqa: E402
from tests.harness.rspamd import RspamdInstance  # noqa: E402


def rates(results, samples) -> tuple[float, float]:
    ham = [r for r, s in zip(results, samples, strict=True) if not s.is_spam]
    spam = [r for r, s in zip(results, samples, strict=True) if s.is_spam]
    fp = 100.0 * sum(r.is_spam for r in ham) / max(len(ham), 1)
    recall = 100.0 * sum(r.is_spam for r in spam) / max(len(spam), 1)
    return fp, recall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4,
                    help="timed passes over the test split (bundled and rspamd rules-only in turns)")
    ap.add_argument("--rules", action="append", default=[],
                    help="extra rule file or directory for the bundled scanner (scanner_rules)")
    ap.add_argument("--spamassassin", choices=("off", "content", "scored", "all"), default="content",
                    help="SpamAssassin's rules from /usr/share/spamassassin (scanner_spamassassin)")
    args = ap.parse_args()
    samples = load()
    train, test = split(samples)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tmp = tempfile.mkdtemp(prefix="aliasd-speed-")
    url = f"sqlite:///{tmp}/bench.db"
    db = Database(url, timeout=60)
    db.upgrade()
    bundled = BundledScanner(load_settings(environ={}, data_dir=tmp, database_url=url,
                                           scanner_rules=args.rules,
                                           scanner_spamassassin=args.spamassassin), db)
    for is_spam in (True, False):
        batch = [s.raw for s in train if s.is_spam is is_spam]
        for i in range(0, len(batch), 500):
            bundled.learn_many(batch[i : i + 500], is_spam)
    t0 = time.perf_counter()
    bundled.bayes.load_snapshot()  # what a long-running milter has after start-up
    t_snapshot = time.perf_counter() - t0
    requests_ = [ScanRequest(message=s.raw, envelope_from=s.envelope_from) for s in test]

    def one_pass(scan) -> tuple[float, list]:
        t0 = time.perf_counter()
        out = [scan(r) for r in requests_]
        return len(requests_) / (time.perf_counter() - t0), out

    # The bundled scanner and rspamd rules-only take turns, pass after pass, and each
    # keeps its best pass: the machine's load (other jobs) moves from minute to minute,
    # and taking turns exposes both to the same load; the best pass is the least
    # disturbed one of each.
    rows = []
    learn_note = ""
    with RspamdInstance(min_learns=200, bayes=False) as rspamd:
        rs = RspamdScanner(load_settings(
            environ={}, data_dir=tmp, scanner_backend="rspamd", rspamd_url=rspamd.url,
            rspamd_controller_url=rspamd.controller_url, rspamd_password=rspamd.password,
        ))
        for r in requests_[:50]:  # warm-up
            rs.scan(r)
        best = {"bundled": (0.0, []), "rspamd": (0.0, [])}
        for _ in range(args.rounds):
            for key, scan in (("bundled", bundled.scan), ("rspamd", rs.scan)):
                rate, out = one_pass(scan)
                if rate > best[key][0]:
                    best[key] = (rate, best[key][1] or out)
        rows.append(("aliasd bundled (rules + Bayes)", *best["bundled"]))
        rows.append(("rspamd /checkv2 rules, no Bayes", *best["rspamd"]))
    bundled.close()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with RspamdInstance(min_learns=200, bayes=True) as rspamd:
        rs = RspamdScanner(load_settings(
            environ={}, data_dir=tmp, scanner_backend="rspamd", rspamd_url=rspamd.url,
            rspamd_controller_url=rspamd.controller_url, rspamd_password=rspamd.password,
        ))
        t0 = time.perf_counter()
        session = requests.Session()
        for s in train:
            session.post(
                rspamd.controller_url + ("/learnspam" if s.is_spam else "/learnham"),
                data=s.raw, headers={"Password": rspamd.password}, timeout=60,
            )
        learn_note = f", rspamd learn {time.perf_counter() - t0:.0f}s"
        for r in requests_[:50]:  # warm-up
            rs.scan(r)
        rate, out = max((one_pass(rs.scan) for _ in range(args.rounds)), key=lambda x: x[0])
        rows.append(("rspamd /checkv2 rules + Bayes (redis)", rate, out))

    print(f"messages: {len(requests_)} (the 20 % split), best of {args.rounds} passes each, one at a time; "
          f"learned {len(train)} (bundled snapshot load {t_snapshot:.1f}s{learn_note})")
    for label, rate, results in rows:
        fp, rec = rates(results, test)
        print(f"{label:40s} {rate:7.1f} msg/s   FP {fp:.2f}%  recall {rec:.1f}%")
    fastest_rspamd = max(rate for label, rate, _ in rows[1:])
    print(f"ratio bundled / fastest rspamd: {rows[0][1] / fastest_rspamd:.2f}x (target >= 1.5x)")
    print(f"bundled scanner process peak RSS: {rss:.0f} MB, {rss - rss_before:.0f} MB more than "
          f"with the corpus loaded alone")
    db.dispose()
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

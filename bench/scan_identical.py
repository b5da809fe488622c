"""Scan speed of the bundled scanner against another checkout, with the same verdicts.

    python bench/scan_identical.py [--passes N] [--compare-tree PATH] [--cache DIR]

Learns the 80 % of the SpamAssassin corpus (bench/corpus.py), then scans the other 20 %
one message at a time, N passes, and prints messages/s of the best pass. The clock the
scanner reads is fixed (2026-01-01 UTC), so the date rules give the same options run
after run.

With ``--compare-tree PATH`` (e.g. ``git worktree add --detach /tmp/base main``) the same
runs in a second process importing ``aliasd`` from PATH: both learn the same messages,
then their passes take turns (the order swapped each round, so both see the same load)
and each is rated by its best pass. Prints how many messages got another action, score
or list of symbols (name, score, options, in order) there, and both rates side by side.
Exits 1 when any message differs."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

BENCH = Path(__file__).resolve().parent
FIXED_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--passes", type=int, default=5, help="timed passes over the 20 %% (best counts)")
    ap.add_argument("--compare-tree", default="", help="another checkout to compare with")
    ap.add_argument("--cache", default=str(BENCH / ".cache"),
                    help="the corpus cache (bench/corpus.py fetches it there when missing)")
    ap.add_argument("--spamassassin", choices=("off", "content", "all"), default="content",
                    help="SpamAssassin's rules from /usr/share/spamassassin (scanner_spamassassin)")
    ap.add_argument("--limit", type=int, default=0, help="scan only the first N messages of the 20 %%")
    ap.add_argument("--tree", default=str(BENCH.parent), help=argparse.SUPPRESS)  # the aliasd to import
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # child: commands on stdin
    return ap.parse_args(argv)


class Side:
    """One scanner, learned, with its requests: ``one_pass()`` gives (msg/s, verdicts)."""

    def __init__(self, args: argparse.Namespace) -> None:
        tree = str(Path(args.tree).resolve())
        sys.path.insert(0, str(BENCH))
        sys.path.insert(0, tree)
        import corpus

        import aliasd
        from aliasd.config import load_settings
        from aliasd.db import Database
        from aliasd.scanner import bundled
        from aliasd.scanner.result import ScanRequest

        if not Path(aliasd.__file__).resolve().is_relative_to(tree):
            raise SystemExit(f"aliasd imported from {aliasd.__file__}, not from {tree}")
        self.tree = tree
        corpus.CACHE = Path(args.cache)
        corpus.DATA = corpus.CACHE / "package" / "data"
        train, test = corpus.split(corpus.load())
        if args.limit:
            test = test[: args.limit]
        self.names = [s.name for s in test]

        class _FixedClock(dt.datetime):
            @classmethod
            def now(cls, tz: dt.tzinfo | None = None) -> dt.datetime:
                return FIXED_NOW if tz is not None else FIXED_NOW.replace(tzinfo=None)

        # bundled.py reads the time as dt.datetime.now(dt.UTC)
        bundled.dt = types.SimpleNamespace(**{**vars(dt), "datetime": _FixedClock})
        self.tmp = tempfile.mkdtemp(prefix="aliasd-identical-")
        url = f"sqlite:///{self.tmp}/bench.db"
        self.db = Database(url, timeout=60)
        self.db.upgrade()
        settings = load_settings(environ={}, data_dir=self.tmp, database_url=url,
                                 scanner_spamassassin=args.spamassassin)
        self.scanner = bundled.BundledScanner(settings, self.db, dns_lookup=_no_dns)
        for is_spam in (True, False):
            batch = [s.raw for s in train if s.is_spam is is_spam]
            for i in range(0, len(batch), 500):
                self.scanner.learn_many(batch[i : i + 500], is_spam)
        self.scanner.bayes.load_snapshot()  # what a long-running milter has after start-up
        self.requests = [ScanRequest(message=s.raw, envelope_from=s.envelope_from) for s in test]
        self.verdicts: list | None = None
        for r in self.requests[:50]:  # warm-up (caches, lazily compiled patterns)
            self.scanner.scan(r)

    def one_pass(self) -> float:
        scan = self.scanner.scan
        t0 = time.perf_counter()
        out = [scan(r) for r in self.requests]
        rate = len(self.requests) / (time.perf_counter() - t0)
        if self.verdicts is None:
            # through JSON, as the other side's come: tuples become lists on both sides
            self.verdicts = json.loads(json.dumps([
                [r.action.value, r.score, [[s.name, s.score, list(s.options)] for s in r.symbols]]
                for r in out]))
        return rate

    def close(self) -> None:
        self.scanner.close()
        self.db.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _no_dns(*_args, **_kwargs) -> list:
    return []  # SPF is off by default; never ask the network


def serve(args: argparse.Namespace) -> int:
    """The compared tree's side: one JSON line on stdout per command read on stdin."""
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing else may write into the protocol
    side = Side(args)
    out.write(json.dumps({"ready": len(side.requests), "tree": side.tree}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "pass":
            out.write(json.dumps({"rate": side.one_pass()}) + "\n")
        elif cmd == "verdicts":
            out.write(json.dumps({"names": side.names, "verdicts": side.verdicts}) + "\n")
        else:
            break
        out.flush()
    side.close()
    return 0


def main() -> int:
    args = _args()
    if args.serve:
        return serve(args)
    child = None
    if args.compare_tree:
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve", "--tree", args.compare_tree,
                "--cache", args.cache, "--spamassassin", args.spamassassin, "--limit", str(args.limit)]
        # both sides learn at once (two processes); PYTHONPATH must not pick the tree
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    t0 = time.perf_counter()
    side = Side(args)

    def ask(cmd: str) -> dict:
        assert child is not None and child.stdin is not None and child.stdout is not None
        child.stdin.write(cmd + "\n")
        child.stdin.flush()
        line = child.stdout.readline()
        if not line:
            raise SystemExit(f"the compared tree's process ended (exit {child.wait()})")
        return json.loads(line)

    if child is not None:
        assert child.stdout is not None
        ready = json.loads(child.stdout.readline() or "{}")
        if ready.get("ready") != len(side.requests):
            raise SystemExit(f"the compared tree did not start: {ready}")
    print(f"learned and ready in {time.perf_counter() - t0:.0f}s; scanning {len(side.requests)} messages "
          f"(the 20 % split), best of {args.passes} passes, clock fixed at {FIXED_NOW:%Y-%m-%d}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    best_here = best_there = 0.0
    for i in range(args.passes):
        for who in (("here", "there") if i % 2 == 0 else ("there", "here")):
            if who == "here":
                best_here = max(best_here, side.one_pass())
            elif child is not None:
                best_there = max(best_there, ask("pass")["rate"])
    print(f"this tree  {side.tree}: {best_here:7.1f} msg/s")
    status = 0
    if child is not None:
        theirs = ask("verdicts")
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
        if theirs["names"] != side.names:
            raise SystemExit("the two trees scanned different messages")
        differ = [n for n, a, b in zip(side.names, side.verdicts or [], theirs["verdicts"], strict=True) if a != b]
        print(f"other tree {args.compare_tree}: {best_there:7.1f} msg/s")
        print(f"speed ratio this / other: {best_here / best_there:.3f}x")
        print(f"messages with another action, score or symbols: {len(differ)} of {len(side.names)}")
        for name in differ[:10]:
            print(f"  {name}")
        status = 1 if differ else 0
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    side.close()
    return status


if __name__ == "__main__":
    sys.exit(main())

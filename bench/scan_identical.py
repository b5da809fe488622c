"""Scan speed of the bundled scanner against another checkout, with the same verdicts.

    python bench/scan_identical.py [--passes N] [--compare-tree PATH] [--cache DIR]

Learns the 80 % of the SpamAssassin corpus (bench/corpus.py), then scans the other 20 %
one message at a time, N passes, and prints messages/s of the best pass, by wall time and
by the process's CPU time (steadier when other jobs share the machine). The clock the
scanner reads is fixed (2026-01-01 UTC), so the date rules give the same options run
after run.

With ``--compare-tree PATH`` (e.g. ``git worktree add --detach /tmp/base main``) the same
runs in two processes started alike, one importing ``aliasd`` from this checkout, one
from PATH (string hashing seeded alike): both learn the same messages, then their passes
take turns (the order swapped each round, so both see the same load) and each is rated
by its best pass. Prints how many messages got another action, score
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
    ap.add_argument("--spamassassin", choices=("off", "content", "scored", "all"), default="content",
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

    def one_pass(self) -> tuple[float, float]:
        """(messages per second of wall time, per second of this process's CPU time)."""
        scan = self.scanner.scan
        t0, c0 = time.perf_counter(), time.process_time()
        out = [scan(r) for r in self.requests]
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if self.verdicts is None:
            # through JSON, as the other side's come: tuples become lists on both sides
            self.verdicts = json.loads(json.dumps([
                [r.action.value, r.score, [[s.name, s.score, list(s.options)] for s in r.symbols]]
                for r in out]))
        return len(self.requests) / wall, len(self.requests) / cpu

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
            out.write(json.dumps({"rates": side.one_pass()}) + "\n")
        elif cmd == "verdicts":
            out.write(json.dumps({"names": side.names, "verdicts": side.verdicts}) + "\n")
        else:
            break
        out.flush()
    side.close()
    return 0


class Child:
    """A side in a process of its own (``--serve``), spoken to over its stdin/stdout."""

    def __init__(self, args: argparse.Namespace, tree: str) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve", "--tree", tree,
                "--cache", args.cache, "--spamassassin", args.spamassassin, "--limit", str(args.limit)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # --tree decides
        env["PYTHONHASHSEED"] = "0"  # the same set and dict layouts on both sides
        self.tree = tree
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the process scanning with {self.tree} ended (exit {self.proc.wait()})")
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def best(rates: list[tuple[float, float]]) -> tuple[float, float]:
    return max(w for w, _ in rates), max(c for _, c in rates)


def main() -> int:
    args = _args()
    if args.serve:
        return serve(args)
    t0 = time.perf_counter()
    if not args.compare_tree:
        side = Side(args)
        rates = [side.one_pass() for _ in range(args.passes)]
        print(f"{len(side.requests)} messages (the 20 % split), best of {args.passes} passes, clock fixed at "
              f"{FIXED_NOW:%Y-%m-%d}: {best(rates)[0]:.1f} msg/s, {best(rates)[1]:.1f} msg per CPU second; "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        side.close()
        return 0
    # Both trees in processes of their own, started the same way (neither runs in this
    # one), learning at the same time; then their passes take turns.
    sides = [Child(args, args.tree), Child(args, args.compare_tree)]
    ready = [c.read() for c in sides]
    if ready[0].get("ready") != ready[1].get("ready"):
        raise SystemExit(f"the two trees did not start alike: {ready}")
    print(f"learned and ready in {time.perf_counter() - t0:.0f}s; scanning {ready[0]['ready']} messages "
          f"(the 20 % split), best of {args.passes} passes, clock fixed at {FIXED_NOW:%Y-%m-%d}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    rates: list[list[tuple[float, float]]] = [[], []]
    for i in range(args.passes):
        for k in ((0, 1) if i % 2 == 0 else (1, 0)):
            rates[k].append(tuple(sides[k].ask("pass")["rates"]))
    verdicts = [c.ask("verdicts") for c in sides]
    for c in sides:
        c.close()
    if verdicts[0]["names"] != verdicts[1]["names"]:
        raise SystemExit("the two trees scanned different messages")
    names = verdicts[0]["names"]
    differ = [n for n, a, b in zip(names, verdicts[0]["verdicts"], verdicts[1]["verdicts"], strict=True)
              if a != b]
    for label, c, r in (("this tree ", sides[0], rates[0]), ("other tree", sides[1], rates[1])):
        print(f"{label} {ready[sides.index(c)]['tree']}: {best(r)[0]:7.1f} msg/s, "
              f"{best(r)[1]:7.1f} msg per CPU second")
    print(f"speed ratio this / other: {best(rates[0])[0] / best(rates[1])[0]:.3f}x wall time, "
          f"{best(rates[0])[1] / best(rates[1])[1]:.3f}x CPU time")
    print(f"messages with another action, score or symbols: {len(differ)} of {len(names)}")
    for name in differ[:10]:
        print(f"  {name}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

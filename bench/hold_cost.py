"""What recording one held message costs: ``aliasd.core.quarantine.record_hold`` (the
cap check, the learning copy and the held row; the commit not counted) on a fresh
database, one session per hold as the milter does. With ``--compare-tree DIR`` (another
checkout) the same runs are made from that code too, rounds interleaved.

    python bench/hold_cost.py [--holds 200] [--rounds 5] [--compare-tree DIR]
                              [--database-url POSTGRESQL_ADMIN_URL]

SQLite by default (a file per run); with ``--database-url`` each run creates its own
PostgreSQL database on that server and drops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from scratch_database import drop_database, fresh_database
from tree_runs import run_worker, trees


def worker(admin_url: str, holds: int) -> list[float]:
    from aliasd.config import load_settings
    from aliasd.core import aliases as core
    from aliasd.core import quarantine
    from aliasd.db import Database

    with tempfile.TemporaryDirectory() as tmp:
        url = fresh_database(admin_url, "bench_hold") if admin_url else f"sqlite:///{tmp}/bench.db"
        settings = load_settings(environ={}, database_url=url, data_dir=f"{tmp}/data",
                                 env="development", secret_key="bench",
                                 quarantine_max_held=10**9)  # fmt: skip
        db = Database(url)
        db.upgrade()
        with db.session() as s:
            user = core.create_user(s, "bench", "bench@mailbox.example")
            core.create_domain(s, "example.net", user)
            alias = core.create_alias(s, "shop@example.net", user, site="shop.example")
            seen = quarantine.SeenMessage(
                user.id, alias.id, alias.address, "4XyZ1abcD", "offers@shop.example",
                "Shop <offers@shop.example>", "Only today", 9.5,
                "SUBJ_ALL_CAPS(3.00)[]; BAYES_SPAM(5.00)[99.00%]",
                Path(__file__).read_bytes()[:6000])  # fmt: skip
        times = []
        for _ in range(holds):
            with db.session() as s:
                t0 = time.perf_counter()
                quarantine.record_hold(s, settings, seen, "Only today: " * 100)
                times.append((time.perf_counter() - t0) * 1000)
        db.dispose()
        if admin_url:
            drop_database(admin_url, url)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--holds", type=int, default=200, help="holds per run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--compare-tree", default="")
    ap.add_argument("--database-url", default="")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.database_url, args.holds)))
        return
    roots = trees(args.compare_tree)
    times: dict[str, list[float]] = {name: [] for name in roots}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, root in roots.items():
            times[name] += run_worker(__file__, name, root, [
                "--holds", str(args.holds), "--database-url", args.database_url])
    load = os.getloadavg()
    print(f"load average {load_before[0]:.2f} before, {load[0]:.2f} after; "
          f"{args.holds} holds x {args.rounds} rounds per tree")
    for name, spent in times.items():
        print(f"{name:6} ms per hold: median {statistics.median(spent):.3f}, "
              f"mean {statistics.fmean(spent):.3f}")


if __name__ == "__main__":
    main()

"""What the database costs a forwarded message in the milter, in-process, per message:

  forwarded   ReplyPath.forwarded for a correspondent who already has a reverse alias
              for the alias (the common case), preserve mode: no DKIM signing, so the
              figure is the database work
  threshold   review's quarantine threshold read (the owner's quarantine_score)
  process     MailPath.process of the same messages (real bundled scanner), for scale

with the number of SQL statements each one sends. With ``--compare-tree DIR`` (another
checkout, e.g. ``git archive <commit> | tar -x -C DIR``) the same measurements run from
that code too, rounds interleaved, side by side in one run.

    python bench/forwarded_cost.py [--messages 2000] [--rounds 3] [--compare-tree DIR]
                                   [--database-url POSTGRESQL_ADMIN_URL]

SQLite by default (a file per run); with ``--database-url`` each run creates its own
PostgreSQL database on that server and drops it afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from scratch_database import drop_database, fresh_database
from tree_runs import run_worker, trees

CORRESPONDENTS = 50
ALIAS = "shop.example@example.net"


def _envelope(i: int):
    from aliasd.milter.processing import Envelope

    who = f"support{i % CORRESPONDENTS}@shop.example"
    env = Envelope(sender=who, recipients=[ALIAS], client_addr="192.0.2.1",
                   helo="mx.shop.example", queue_id=f"Q{i:08d}")
    env.headers = [("From", f"Shop Support {i % CORRESPONDENTS} <{who}>".encode()),
                   ("To", ALIAS.encode()), ("Subject", f"Order {i} shipped".encode()),
                   ("Date", b"Sat, 5 Dec 2026 10:00:00 +0000"),
                   ("Message-ID", f"<{i}@shop.example>".encode())]
    env.body = bytearray(b"Your order shipped.\r\n" * 20)
    env.size = len(env.raw_message())
    return env


def _timed(func, n: int, counter: list[int]) -> tuple[float, float]:
    """(median microseconds, SQL statements) per call."""
    times = []
    before = counter[0]
    for i in range(n):
        t0 = time.perf_counter()
        func(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6, (counter[0] - before) / n


def worker(root: str, url: str, messages: int) -> dict[str, float]:
    sys.path.insert(0, root)
    from sqlalchemy import event

    from aliasd.config import load_settings
    from aliasd.core import aliases as core
    from aliasd.core.events import AliasTarget
    from aliasd.db import Database
    from aliasd.milter import review
    from aliasd.milter.processing import MailPath
    from aliasd.milter.replies import ReplyPath

    admin_url = url
    with tempfile.TemporaryDirectory() as tmp:
        url = fresh_database(admin_url, "bench_fwd") if admin_url else f"sqlite:///{Path(tmp) / 'bench.db'}"
        settings = load_settings(environ={}, database_url=url, data_dir=tmp,
                                 env="development", secret_key="bench", learn_keep_days=0)
        db = Database(url)
        db.upgrade()
        with db.session() as s:
            user = core.create_user(s, "bench", "bench@mailbox.example")
            user.quarantine_score = 5.0
            core.create_domain(s, "example.net", user)
            alias = core.create_alias(s, ALIAS, user, site="shop.example")
            s.flush()
            target = AliasTarget(alias.id, alias.address, alias.owner_id, None, "active")
        counter = [0]
        event.listen(db.engine, "before_cursor_execute",
                     lambda *a: counter.__setitem__(0, counter[0] + 1))
        replies = ReplyPath(settings, db)
        envelopes = [_envelope(i) for i in range(messages)]
        for i in range(CORRESPONDENTS):  # each correspondent gets its reverse alias
            assert replies.forwarded(envelopes[i], target, None) is not None
        out: dict[str, float] = {}
        out["forwarded"], out["forwarded_sql"] = _timed(
            lambda i: replies.forwarded(envelopes[i], target, None), messages, counter)
        path = SimpleNamespace(settings=settings, database=db)
        verdict = SimpleNamespace(result=SimpleNamespace(score=1.0), status="accept")
        out["threshold"], out["threshold_sql"] = _timed(
            lambda i: review._decide_hold(path, verdict, target.owner_id), messages, counter)
        mail = MailPath(settings, db)
        for i in range(20):  # warm up the scanner
            mail.process(envelopes[i])
        n = max(messages // 5, 50)
        out["process"], out["process_sql"] = _timed(
            lambda i: mail.process(envelopes[i]), n, counter)
        mail.close()
        db.dispose()
        if admin_url:
            drop_database(admin_url, url)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare-tree", default="")
    ap.add_argument("--database-url", default="")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.database_url, args.messages)))
        return
    roots = trees(args.compare_tree)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in roots}
    for _ in range(args.rounds):
        for name, root in roots.items():
            results[name].append(run_worker(__file__, name, root, [
                "--messages", str(args.messages), "--database-url", args.database_url]))
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}; "
          f"{args.messages} messages, {args.rounds} rounds; medians of per-round medians")
    print(f"{'':10}" + "".join(f"{name + ' µs':>14}{'SQL':>6}" for name in roots)
          + ("   this/other" if len(roots) == 2 else ""))
    for step in ("forwarded", "threshold", "process"):
        cells = []
        meds = []
        for name in roots:
            med = statistics.median(r[step] for r in results[name])
            meds.append(med)
            cells.append(f"{med:14.1f}{results[name][0][step + '_sql']:6.1f}")
        ratio = f"   {meds[0] / meds[1]:.2f}x" if len(meds) == 2 else ""
        print(f"{step:10}" + "".join(cells) + ratio)
    for name in roots:  # the spread between rounds says how noisy the run was
        print(f"{name} per round: " + "; ".join(
            " ".join(f"{step} {r[step]:.0f}" for step in ("forwarded", "process"))
            for r in results[name]))


if __name__ == "__main__":
    main()

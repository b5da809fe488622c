"""CPU the milter's event writer spends per message: ``event_writer.write_records`` on
batches of records like the mail-path bench's (one alias tied to a site, the senders of
400 corpus messages, half of them spam: leak evidence for the site), SQLite, in-process,
after a warm-up pass. With ``--compare-tree DIR`` the same runs are made from that
checkout too (one process after the other), side by side.

    python bench/writer_cost.py [--batch 1,5,20] [--rounds 3] [--compare-tree DIR]

Prints CPU ms per record (the best of the rounds) for each batch size: the writer
commits what gathered in 50 ms as one batch, so the size grows with the message rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tree_runs import run_worker, trees

SITE_ALIAS = "github.com@example.net"


def worker(batches: list[int], rounds: int) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from corpus import load

    from aliasd.config import load_settings
    from aliasd.core import aliases as core
    from aliasd.core import events
    from aliasd.db import Database
    from aliasd.milter import event_writer

    samples = load()[:400]
    tmp = tempfile.mkdtemp(prefix="aliasd-writer-cost-")
    url = f"sqlite:///{tmp}/bench.db"
    database = Database(url, timeout=60)
    database.upgrade()
    settings = load_settings(environ={}, data_dir=tmp, database_url=url,
                             blocklist_reload_command="true")
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, SITE_ALIAS, alice, site="github.com")
    with database.session() as s:
        targets = tuple(events.find_aliases(s, [SITE_ALIAS], "+"))
    records = []
    for i, sample in enumerate(samples):
        sender = sample.envelope_from or "someone@sender.example"
        facts = events.MessageFacts(
            envelope_sender=sender, client_addr="192.0.2.1", helo="mx.sender.example",
            from_domain=sender.rpartition("@")[2] or None, subject=f"message {i}",
            size=len(sample.raw))
        outcome = events.AppliedVerdict(
            score=9.0 if sample.is_spam else 0.5, is_spam=sample.is_spam,
            action="add header" if sample.is_spam else "no action",
            symbols="BAYES_SPAM(5.00)[0.99]; MIME_GOOD(-0.10)[]")
        records.append(event_writer.Record(parts=((targets, outcome),), facts=facts,
                                           queue_id=f"Q{i}"))

    def one_pass(batch: int) -> float:
        started = time.process_time()
        for i in range(0, len(records), batch):
            event_writer.write_records(database, settings, records[i:i + batch])
        return (time.process_time() - started) / len(records) * 1000

    one_pass(5)  # the site's rows exist from here on, as in a running milter
    return {str(b): min(one_pass(b) for _ in range(rounds)) for b in batches}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", default="1,5,20")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare-tree", default="")
    ap.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    if args.worker:
        import json

        print(json.dumps(worker(batches, args.rounds)))
        return 0
    results = {name: run_worker(__file__, name, root, ["--batch", args.batch,
                                                       "--rounds", str(args.rounds)])
               for name, root in trees(args.compare_tree).items()}
    print("event writer, CPU ms per record (best of", args.rounds, "rounds), SQLite")
    print(f"{'batch':>6} " + " ".join(f"{name:>8}" for name in results))
    for b in batches:
        print(f"{b:>6} " + " ".join(f"{results[name][str(b)]:8.3f}" for name in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

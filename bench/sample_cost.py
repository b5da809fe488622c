"""What keeping recent messages for "this was spam / not spam" costs the SMTP answer
(the copies are written by a background thread):
MailPath.process (real bundled scanner, real database) on the same messages with
learn_keep_days = 0 (nothing kept) and 3 (each message's first learn_sample_max_bytes
kept), milliseconds per message.

    python bench/sample_cost.py [--messages 300] [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from aliasd.config import load_settings
from aliasd.core import aliases as core
from aliasd.db import Database
from aliasd.milter.processing import Envelope, MailPath

BODY = ("Hello,\n\nyour order 4711 has shipped and will arrive on Tuesday. " * 40).encode()


def envelope(i: int) -> Envelope:
    headers = [("From", b"shop <orders@shop.example>"), ("To", b"shop.example@example.net"),
               ("Subject", f"Order {i} shipped".encode()), ("Date", b"Sat, 5 Dec 2026 10:00:00 +0000"),
               ("Message-ID", f"<{i}@shop.example>".encode()), ("MIME-Version", b"1.0"),
               ("Content-Type", b"text/plain; charset=utf-8")]
    env = Envelope(sender="orders@shop.example", recipients=["shop.example@example.net"],
                   client_addr="192.0.2.1", helo="mx.shop.example", queue_id=f"Q{i:08d}")
    env.headers = headers
    env.body = bytearray(BODY)
    env.size = len(env.raw_message())
    return env


def run(url: str, keep_days: int, n: int, data_dir: str) -> float:
    settings = load_settings(environ={}, database_url=url, data_dir=data_dir,
                             env="development", secret_key="bench", learn_keep_days=keep_days)
    db = Database(url)
    path = MailPath(settings, db)
    for i in range(20):  # warm up: scanner, caches
        path.process(envelope(i))
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        path.process(envelope(1000 + i))
        times.append(time.perf_counter() - t0)
    writer = getattr(path, "_sample_writer", None)
    if writer is not None:  # the copies are written off the answer's path: wait for them
        t0 = time.perf_counter()
        writer.pending.join()
        print(f"  (background writer finished {time.perf_counter() - t0:.2f} s after the last)")
    path.close()
    db.dispose()
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--database-url", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        db = Database(url)
        db.upgrade()
        with db.session() as s:
            user = core.create_user(s, "bench", "bench@mailbox.example")
            core.create_domain(s, "example.net", user)
            core.create_alias(s, "shop.example@example.net", user, site="shop.example")
        db.dispose()
        for keep in (0, 3, 0, 3):
            ms = run(url, keep, args.messages, tmp)
            print(f"learn_keep_days={keep}: median {ms:.2f} ms per message "
                  f"({len(BODY)} byte body)")


if __name__ == "__main__":
    main()

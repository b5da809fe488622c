"""Cost of the block decision with a large block list: how long reading the list takes,
how long an unchanged refresh takes (the milter asks every 2 s), and the worst case of one
decision (a message no rule blocks, so every rule is tried).

    python bench/block_decision.py [--imported 8000] [--domains 1500] [--regex 500]

A fresh SQLite database in a temporary directory: imported ``/spamN\\.example/`` rules,
aliasd domain rules and ``^Subject:`` regex rules, plus per-user blocks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aliasd.config import load_settings  # noqa: E402
from aliasd.core import aliases as core  # noqa: E402
from aliasd.core import blocking, sender_blocks  # noqa: E402
from aliasd.core.block_decision import BlockListCache, Sender, blocked_for, load_blocklist  # noqa: E402
from tests.harness.databases import sqlite_database  # noqa: E402

HEADERS = [
    ("Received", "from mx.example.org (mx.example.org [192.0.2.1]) by mail.example.net"),
    ("From", "Shop <news@shop.example>"), ("To", "shop@example.net"),
    ("Subject", "Your order has shipped"), ("Date", "Wed, 25 Nov 2026 10:00:00 +0000"),
    ("Message-ID", "<abc@shop.example>"), ("Content-Type", "text/plain; charset=utf-8"),
    ("MIME-Version", "1.0"), *[(f"X-Header-{i}", f"value {i}") for i in range(8)],
]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imported", type=int, default=8000)
    parser.add_argument("--domains", type=int, default=1500)
    parser.add_argument("--regex", type=int, default=500)
    parser.add_argument("--decisions", type=int, default=500)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="aliasd-bench-block-")
    db = sqlite_database(f"{tmp}/aliasd.db")
    settings = load_settings(environ={}, data_dir=tmp, database_url=db.url, env="development",
                             secret_key="bench")  # fmt: skip
    with db.session() as s:
        user = core.create_user(s, "alice", "alice@mail.example")
        for i in range(args.imported):
            blocking.add_regex_rule(s, settings, f"spam{i}\\.example", source="imported")
        for i in range(args.domains):
            blocking.block_domain(s, settings, f"auto{i}.example")
        for i in range(args.regex):
            blocking.add_regex_rule(s, settings, f"^Subject:.*offer number {i}\\b")
        for i in range(200):
            sender_blocks.add_block(s, user.id, f"personal{i}.example")
        owner_id = user.id
    rules = args.imported + args.domains + args.regex
    started = time.perf_counter()
    with db.session() as s:
        blocklist = load_blocklist(s)
    print(f"read {rules} rules + 200 sender blocks: {(time.perf_counter() - started) * 1000:.0f} ms")
    cache = BlockListCache(db, ttl=0)
    cache.get()
    started = time.perf_counter()
    for _ in range(50):
        cache.get()
    print(f"unchanged refresh: {(time.perf_counter() - started) * 1000 / 50:.1f} ms")
    sender = Sender.of_message("news@shop.example", HEADERS)
    started = time.perf_counter()
    for _ in range(args.decisions):
        assert blocked_for(blocklist, sender, owner_id=owner_id, alias_id=1) is None
    per = (time.perf_counter() - started) * 1000 / args.decisions
    print(f"one decision, 16 header lines, nothing blocked (every rule tried): {per:.2f} ms")


if __name__ == "__main__":
    main()

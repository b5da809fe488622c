"""What the milter remembers from the database for a few seconds: a value is answered
for ``ttl`` seconds counted from before its read, then read again; 0 remembers nothing;
past the bound the memory starts over."""

from __future__ import annotations

import time

from aliasd.milter.recent import Recent


def test_a_value_is_remembered_until_its_ttl_counted_from_the_read():
    recent: Recent[str, int] = Recent(ttl=1.0)
    recent.put("a", 1, read_at=time.monotonic())
    assert recent.get("a") == 1
    recent.put("b", 2, read_at=time.monotonic() - 1.0)  # read before a slow query
    assert recent.get("b") is None
    time.sleep(1.1)
    assert recent.get("a") is None
    assert recent.get("never") is None


def test_a_ttl_of_zero_remembers_nothing():
    recent: Recent[str, int] = Recent(ttl=0)
    recent.put("a", 1, read_at=time.monotonic())
    assert recent.get("a") is None


def test_past_its_bound_the_memory_starts_over():
    recent: Recent[int, int] = Recent(ttl=60, max_entries=3)
    now = time.monotonic()
    for key in range(3):
        recent.put(key, key, now)
    assert [recent.get(k) for k in range(3)] == [0, 1, 2]
    recent.put(3, 3, now)
    assert [recent.get(k) for k in range(4)] == [None, None, None, 3]
    recent.forget()
    assert recent.get(3) is None


def test_a_remembered_none_is_told_from_nothing_remembered():
    unknown = object()
    recent: Recent[str, int | None] = Recent(ttl=60)
    recent.put("not an alias", None, time.monotonic())
    assert recent.get("not an alias", unknown) is None
    assert recent.get("never read", unknown) is unknown

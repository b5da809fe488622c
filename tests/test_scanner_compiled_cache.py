"""Compiled pattern databases are kept in the data directory, so that a process that
starts again reads SpamAssassin's rules back instead of compiling them for seconds; a
damaged or foreign file there, or a directory that cannot be written, changes nothing
but the time it takes."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from aliasd.config import load_settings
from aliasd.db import Database
from aliasd.scanner import filerules, multimatch
from aliasd.scanner.bundled import PATTERN_CACHE, BundledScanner
from aliasd.scanner.multimatch import PatternSet
from aliasd.scanner.result import ScanRequest

PATTERNS = [r"(?i)\bcheap\b", r"(?i)viagra", r"\d{3}-\d{4}", r"(?m)^unsubscribe$"]
TEXT = "CHEAP Viagra, call 555-1234\nunsubscribe\n"


def refuse_compiling(monkeypatch) -> None:
    def refuse(_patterns):
        raise AssertionError("compiled although a good database was kept")

    monkeypatch.setattr(multimatch, "_hs_compile", refuse)


def test_a_compiled_database_is_kept_and_read_back_with_the_same_matches(tmp_path, monkeypatch):
    first = PatternSet(PATTERNS, cache_dir=tmp_path)
    kept = list(tmp_path.glob("*.hsdb"))
    assert len(kept) == 1 and first.engine == "hyperscan"
    assert kept[0].stat().st_mode & 0o777 == 0o644  # no secret: every aliasd service may read it
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    refuse_compiling(monkeypatch)
    again = PatternSet(PATTERNS, cache_dir=tmp_path)
    assert again.match(TEXT) == first.match(TEXT) == {0, 1, 2, 3}
    assert again.match("nothing here") == set()


def test_other_patterns_get_a_database_of_their_own(tmp_path):
    PatternSet(PATTERNS, cache_dir=tmp_path)
    other = PatternSet([*PATTERNS[:2], r"(?i)casino"], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.hsdb"))) == 2
    assert other.match("Casino and viagra") == {1, 2}


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "foreign"])
def test_a_damaged_file_is_compiled_again_and_replaced(tmp_path, damage, caplog):
    PatternSet(PATTERNS, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.hsdb")
    data = path.read_bytes()
    if damage == "flip":  # checksum no longer matches: hyperscan itself would load this
        data = data[:-5] + bytes(b ^ 0xFF for b in data[-5:])
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "empty":
        data = b""
    else:  # a matching checksum over something that is no database
        junk = b"not a hyperscan database" * 10
        data = hashlib.sha256(junk).digest() + junk
    path.write_bytes(data)
    again = PatternSet(PATTERNS, cache_dir=tmp_path)
    assert again.match(TEXT) == {0, 1, 2, 3}
    assert path.read_bytes() != data  # replaced by a good one
    assert PatternSet(PATTERNS, cache_dir=tmp_path).match(TEXT) == {0, 1, 2, 3}


def test_a_directory_that_cannot_be_written_only_costs_time(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    assert PatternSet(PATTERNS, cache_dir=blocked / "cache").match(TEXT) == {0, 1, 2, 3}
    if os.geteuid() != 0:  # root writes anywhere; the case above covers it
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert PatternSet(PATTERNS, cache_dir=ro).match(TEXT) == {0, 1, 2, 3}


def test_only_the_most_recently_used_databases_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(multimatch, "CACHE_KEEP", 3)
    for i in range(6):
        PatternSet([*PATTERNS, f"word{i}"], cache_dir=tmp_path)
        time.sleep(0.01)
    assert len(list(tmp_path.glob("*.hsdb"))) == 3


def test_the_scanner_starts_again_from_the_kept_databases_with_the_same_verdicts(tmp_path, monkeypatch):
    """SpamAssassin's rules, as the bundled scanner loads them by default: the second
    start compiles nothing and scans alike."""
    url = f"sqlite:///{tmp_path}/scan.db"
    db = Database(url, timeout=30)
    db.upgrade()
    settings = load_settings(environ={}, data_dir=str(tmp_path), database_url=url)
    raw = (b"From: Rx <deals@meds.example>\nTo: you@example.org\nSubject: order\n\n"
           b"Genuine C1aLiS and V-i-a-g-r-a, no prescription needed.\n")

    def scan() -> dict[str, float]:
        filerules.load.cache_clear()
        scanner = BundledScanner(settings, db)
        try:
            return {s.name: s.score for s in scanner.scan(ScanRequest(message=raw)).symbols}
        finally:
            scanner.close()
            filerules.load.cache_clear()

    first = scan()
    assert list((tmp_path / PATTERN_CACHE).glob("*.hsdb"))
    refuse_compiling(monkeypatch)
    assert scan() == first
    assert {"DRUGS_ERECTILE", "DRUGS_ERECTILE_OBFU"} <= set(first)

"""Many patterns against one text at once: hyperscan (as rspamd does), or RE2 sets where
hyperscan is not installed. Both run in time linear in the text whatever the patterns.
Patterns are RE2 syntax (flags inline), which hyperscan reads the same way; one that
hyperscan refuses runs on RE2 alone."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from pathlib import Path

import re2

from aliasd.files import replace_file

try:  # a wheel with the library inside; optional so that a platform without it still scans
    import hyperscan
except ImportError:  # pragma: no cover - hyperscan is a dependency; this is the fallback
    hyperscan = None

log = logging.getLogger(__name__)

# each pattern reported once per text, and a pattern that can match nothing accepted
_HS_FLAGS = (hyperscan.HS_FLAG_SINGLEMATCH | hyperscan.HS_FLAG_ALLOWEMPTY) if hyperscan is not None else 0

CACHE_KEEP = 40  # compiled databases kept; older ones (rules since changed) are removed
HS_CHUNK = 200  # patterns per hyperscan database (SpamAssassin's live body rules: one)
SET_CHUNK = 150  # patterns per RE2 set: a set's DFA has a memory budget; small sets stay in it
SET_MAX_MEM = 32 << 20


def latin1_options() -> re2.Options:
    """RE2 options that read a bytes pattern and text byte by byte, as hyperscan reads
    them (RE2 reads bytes as UTF-8 by default)."""
    opts = re2.Options()
    opts.encoding = re2.Options.Encoding.LATIN1
    return opts


def _re2_options() -> re2.Options:
    opts = re2.Options()
    opts.log_errors = False
    opts.max_mem = SET_MAX_MEM
    return opts


class PatternSet:
    """``match(text)``: the indexes (into the patterns given) of the patterns found."""

    def __init__(self, patterns: list[str], *, prefer_hyperscan: bool = True,
                 cache_dir: str | Path | None = None) -> None:
        """``prefer_hyperscan=False`` for a few patterns over short texts (one header):
        an RE2 set compiles in microseconds, a hyperscan database in milliseconds.
        ``cache_dir``: where compiled hyperscan databases are kept between processes
        (see _cached_compile); None compiles every time."""
        self._hs: list[tuple[object, list[int]]] = []
        # a hyperscan scratch space serves one scan at a time: one per thread
        self._local = threading.local()
        rest: list[int] = []
        if hyperscan is not None and prefer_hyperscan:
            # databases of HS_CHUNK patterns: compile time grows faster than the count
            for start in range(0, len(patterns), HS_CHUNK):
                ids = list(range(start, min(start + HS_CHUNK, len(patterns))))
                db = _cached_compile([patterns[i] for i in ids], cache_dir)
                if db is None:  # one refused: find it, the others still go to hyperscan
                    good = [i for i in ids if _hs_compile([patterns[i]]) is not None]
                    rest.extend(i for i in ids if i not in good)
                    ids, db = good, _cached_compile([patterns[i] for i in good], cache_dir) if good else None
                if db is not None:
                    self._hs.append((db, ids))
        else:
            rest = list(range(len(patterns)))
        self._sets: list[tuple[object, list[int]]] = []
        for start in range(0, len(rest), SET_CHUNK):
            ids = rest[start : start + SET_CHUNK]
            rset = re2.Set.SearchSet(_re2_options())
            for i in ids:
                rset.Add(patterns[i])
            rset.Compile()
            self._sets.append((rset, ids))

    @property
    def engine(self) -> str:
        return "hyperscan" if self._hs else "re2"

    def match(self, text: str | bytes) -> set[int]:
        """``text`` as bytes is matched as it is (the raw message); as str, UTF-8."""
        found: set[int] = set()
        if not text:
            return found
        if self._hs:
            data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
            scratches = getattr(self._local, "scratches", None)
            if scratches is None:
                scratches = self._local.scratches = [hyperscan.Scratch(db) for db, _ in self._hs]
            for (db, ids), scratch in zip(self._hs, scratches, strict=True):
                def on_match(pattern_id: int, start: int, end: int, flags: int, context: object,
                             ids: list[int] = ids) -> None:
                    found.add(ids[pattern_id])

                db.scan(data, match_event_handler=on_match, scratch=scratch)
        if self._sets and isinstance(text, bytes):
            text = text.decode("latin-1")
        for rset, ids in self._sets:
            for i in rset.Match(text) or ():  # None when nothing matched
                found.add(ids[i])
        return found


def _hs_compile(patterns: list[str]):
    """A hyperscan block-mode database of these patterns, or None if it refuses one."""
    db = hyperscan.Database()
    flags = _HS_FLAGS
    try:
        db.compile(expressions=[p.encode() for p in patterns], ids=list(range(len(patterns))),
                   elements=len(patterns), flags=[flags] * len(patterns))
    except Exception:  # noqa: BLE001 - hyperscan.error or an encoding problem: RE2 runs it
        return None
    return db


def _cached_compile(patterns: list[str], cache_dir: str | Path | None):
    """_hs_compile, through a file in ``cache_dir`` named by the patterns (and the
    hyperscan version): SpamAssassin's rules take seconds to compile, a process that
    starts again (``aliasd scan``, a restarted milter) reads them back in milliseconds,
    as rspamd keeps its own. The file holds the SHA-256 of the database after it and is
    used only when that matches (hyperscan itself would load a damaged database);
    anything wrong with it, or a directory that cannot be written, and the patterns are
    compiled as without a cache."""
    if cache_dir is None or hyperscan is None:
        return _hs_compile(patterns)
    key = hashlib.sha256("\0".join([getattr(hyperscan, "__version__", ""), str(_HS_FLAGS), *patterns])
                         .encode()).hexdigest()
    path = Path(cache_dir) / f"{key}.hsdb"
    try:
        data = path.read_bytes()
        digest, payload = data[:32], data[32:]
        if hashlib.sha256(payload).digest() == digest:
            db = hyperscan.loadb(payload, hyperscan.HS_MODE_BLOCK)
            hyperscan.Scratch(db)  # one the library accepts
            with contextlib.suppress(OSError):
                os.utime(path)  # in use: the last to be pruned
            return db
        log.warning("compiled patterns %s do not match their checksum: compiling again", path)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - unreadable or refused: compile as without a cache
        log.warning("compiled patterns %s unusable (%s): compiling again", path, exc)
    db = _hs_compile(patterns)
    if db is not None:
        try:
            payload = hyperscan.dumpb(db)
            path.parent.mkdir(parents=True, exist_ok=True)
            # whole or not at all, for a process reading it now; no secret: every aliasd
            # service may read it
            replace_file(path, hashlib.sha256(payload).digest() + payload, mode=0o644)
            _prune(path.parent)
        except Exception as exc:  # noqa: BLE001 - a read-only data directory: no cache, same scan
            log.debug("compiled patterns not kept in %s: %s", cache_dir, exc)
    return db


def _prune(cache_dir: Path) -> None:
    """Remove all but the CACHE_KEEP most recently used databases."""
    try:
        files = sorted(cache_dir.glob("*.hsdb"), key=lambda f: f.stat().st_mtime, reverse=True)
    except OSError:
        return
    for old in files[CACHE_KEEP:]:
        with contextlib.suppress(OSError):
            old.unlink()

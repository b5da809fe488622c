"""The Bayes classifier. Token statistics live in the database (``bayes_tokens``,
``bayes_learned``, learn counters in ``counters``), so every host that shares the
database shares what was learned.

Combining follows Robinson/Fisher as rspamd, SpamBayes and SpamAssassin do: a smoothed
spam probability f(w) per token, the most telling tokens combined through Fisher's
chi-square test once for "these tokens are hammy" and once for "they are spammy".
Both tail probabilities are kept as logarithms, so a message with strong evidence
both ways (spam delivered through a mailing list, a newsletter) still says which way
it leans instead of saturating at 0.5; their log-ratio, calibrated, is the spam
probability."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import bindparam, text

from aliasd.db import Database
from aliasd.scanner.base import LearnOutcome
from aliasd.scanner.message import ParsedMessage, message_digest, parse_message
from aliasd.scanner.tokens import message_tokens

C_LEARNED_SPAM = "bayes_learned_spam"
C_LEARNED_HAM = "bayes_learned_ham"
C_REVISION = "bayes_revision"  # bumped on every learn: caches elsewhere are stale

# Robinson's f(w) = (s*x + n*p) / (s + n): a token seen n times is pulled towards x
# with strength s. A weak prior leaning slightly to spam (SpamAssassin: s = 0.03,
# x = 0.538), and tokens nearer to 0.5 than MIN_DEVIATION ignored (SpamAssassin's
# value); in 5-fold cross-validation inside the benchmark's learn set these beat both
# s = 1, x = 0.5 and SpamAssassin's own s and x (0.7 points more recall, same FP).
ROBINSON_S = 0.16
ROBINSON_X = 0.6
MIN_DEVIATION = 0.346
# Most telling tokens combined per message. 150: with 40, prose spam about a topic the
# learned ham also discusses (hardware sales, telecom news, health) was decided by its
# 40 most ham-like ordinary words alone; with 150 its sales tokens count as well. Chosen
# on validation data that resembles new mail (bench/accuracy.py: spam-2 left out,
# validation half; --cv and the --time validation half for ham), with the calibration
# centre refitted at each: 40 -> 150 caught 455 instead of 408 of 560 new spam, 9
# instead of 10 of 3,310 ham flagged in cross-validation, none of the validation
# easy-ham-2, and 43 instead of 73 of 108 unlearned hard ham. More (200, 250) was no
# better; 60-120 gained half as much.
MAX_TOKENS = 150
# The log-ratio of the two tail probabilities is turned into a spam probability by a
# logistic: p = 1 / (1 + exp(-(log_ratio - CENTER * k / MAX_TOKENS) / SCALE)), k the
# tokens used. Fisher's test is biased towards spam by x = 0.6 per token, hence a
# centre that grows with the number of tokens combined. The scale is a logistic fit on
# held-out messages (5-fold cross-validation in the learn set); the centre was chosen
# with MAX_TOKENS as above, the most spam-ward value that flags no more ham than before
# in cross-validation (-28 flagged 11, -24 flags 9).
CALIBRATION_CENTER = -24.0
CALIBRATION_SCALE = 11.4
# Token counts kept in memory per process while no snapshot serves (the first seconds,
# or past SNAPSHOT_MAX): about 150 bytes each, 75 MB at most (2,000,000 allowed 300 MB).
CACHE_MAX = 500_000
REVISION_CHECK = 1.0  # seconds between checks whether another process learned
SNAPSHOT_MAX = 8_000_000  # above this many tokens, no in-memory snapshot (~16 bytes each)
SNAPSHOT_INTERVAL = 15.0  # seconds between snapshot reloads while learning goes on
SNAPSHOT_RETRY = 3600.0  # after finding too many tokens, look again this much later


class Snapshot:
    """All token counts at one learn revision: sorted numpy arrays plus a bucket index
    on the top bits of the token (about one token per bucket), so a message's tokens
    are found with a few vectorised probes instead of a binary search each."""

    def __init__(self, revision: int, tokens: np.ndarray, spam: np.ndarray, ham: np.ndarray):
        self.revision = revision
        self.tokens = tokens  # int64, sorted
        self.spam = spam
        self.ham = ham
        bits = max(1, min(26, int(len(tokens)).bit_length()))
        self._shift = np.int64(64 - bits)
        self._offset = np.int64(1 << (bits - 1))
        edges = np.arange(-(1 << (bits - 1)), (1 << (bits - 1)) + 1, dtype=np.int64)
        self._starts = np.searchsorted(tokens >> self._shift, edges).astype(np.int64)

    def lookup(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        spam = np.zeros(len(tokens), dtype=np.float64)
        ham = np.zeros(len(tokens), dtype=np.float64)
        n = len(self.tokens)
        if n == 0 or len(tokens) == 0:
            return spam, ham
        bucket = (tokens >> self._shift) + self._offset
        cand = self._starts[bucket]
        end = self._starts[bucket + 1]
        # One probe at the start of each token's bucket settles most tokens (an empty
        # bucket's start lies in another bucket, whose tokens cannot be equal); the
        # few in buckets of two or more that it misses get one binary search together,
        # cheaper than probing on along the buckets in a loop.
        idx = np.minimum(cand, n - 1)
        hit = self.tokens[idx] == tokens
        rest = np.nonzero((cand + 1 < end) & ~hit)[0]
        if len(rest):
            found = np.minimum(np.searchsorted(self.tokens, tokens[rest]), n - 1)
            idx[rest] = found
            hit[rest] = self.tokens[found] == tokens[rest]
        at = idx[hit]
        spam[hit] = self.spam[at]
        ham[hit] = self.ham[at]
        return spam, ham


@dataclass(frozen=True)
class BayesVerdict:
    probability: float  # calibrated spam probability
    tokens_used: int  # significant tokens combined (0: nothing telling, probability 0.5)
    log_ratio: float = 0.0  # ln P(ham test) - ln P(spam test): > 0 leans to spam
    # ln P(spam test): how unlikely tokens this spammy are by chance (0: no spam evidence),
    # whichever way the message leans
    log_q_spam: float = 0.0


# i and ln(i!) for the terms of the chi-square series, computed once
_SERIES_I = np.arange(1024, dtype=np.float64)
_SERIES_LOG_FACTORIAL = np.concatenate(([0.0], np.cumsum(np.log(_SERIES_I[1:]))))


def log_chi2q(x2: float, dof: int) -> float:
    """ln P(chi² >= x2) for an even number of degrees of freedom: the closed-form series
    summed in log space, so tails far below the smallest float keep their size."""
    m = x2 / 2.0
    n = dof // 2
    if m <= 0.0:
        return 0.0
    # ln(m^i / i!) for i < n, then ln(sum) - m; vectorised: with up to MAX_TOKENS terms
    # a Python loop cost 80 µs a call, this 7 µs whatever the count
    if n <= len(_SERIES_I):
        i, log_factorial = _SERIES_I[:n], _SERIES_LOG_FACTORIAL[:n]
    else:
        i = np.arange(n, dtype=np.float64)
        log_factorial = np.concatenate(([0.0], np.cumsum(np.log(i[1:]))))
    terms = i * math.log(m) - log_factorial
    top = float(terms.max())
    return min(0.0, -m + top + math.log(float(np.exp(terms - top).sum())))


def bump_counters(conn, deltas: dict[str, int]) -> None:
    """Add to named counters in one statement per counter (upsert: any host may be first)."""
    for name, delta in deltas.items():
        if not delta:
            continue
        conn.execute(
            text(
                "INSERT INTO counters (name, value) VALUES (:n, :d) "
                "ON CONFLICT (name) DO UPDATE SET value = counters.value + :d"
            ),
            {"n": name, "d": delta},
        )


def read_counters(conn, names: Iterable[str]) -> dict[str, int]:
    names = list(names)
    rows = conn.execute(
        text("SELECT name, value FROM counters WHERE name IN :names").bindparams(
            bindparam("names", expanding=True)
        ),
        {"names": names},
    )
    found = {name: int(value) for name, value in rows}
    return {n: found.get(n, 0) for n in names}


class BayesStore:
    """Token counts in the database, read through two in-process layers:

    - a snapshot of every token as sorted numpy arrays, loaded in a background thread
      and used while it matches the current learn revision: a scan then costs no
      database work at all (the revision is checked at most once a second);
    - otherwise (snapshot stale after a learn, still loading, or too many tokens) one
      batched SELECT of the message's tokens not cached yet, through a dict cache that
      is dropped whenever the revision changes.
    Either way a learn anywhere is seen by every host within about a second."""

    def __init__(self, database: Database) -> None:
        self.db = database
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[int, int]] = {}
        self._revision: int | None = None
        self._learned = (0, 0)
        self._checked_at = 0.0
        self._pg = not database.is_sqlite
        self._snapshot: Snapshot | None = None
        self._loading = False
        self._load_started = -1e9
        self._snapshot_after = 0.0  # monotonic time before which no snapshot is tried

    # --- reading ------------------------------------------------------------------
    def _refresh(self, conn, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < REVISION_CHECK and self._revision is not None:
            return
        values = read_counters(conn, (C_REVISION, C_LEARNED_SPAM, C_LEARNED_HAM))
        with self._lock:
            if values[C_REVISION] != self._revision:
                self._cache.clear()
                self._revision = values[C_REVISION]
            self._learned = (values[C_LEARNED_SPAM], values[C_LEARNED_HAM])
            self._checked_at = now

    def learned_counts(self) -> tuple[int, int]:
        with self.db.engine.connect() as conn:
            self._refresh(conn)
        return self._learned

    def counts(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """Spam and ham counts for each token, and the learned (spam, ham) totals."""
        if self._revision is None or time.monotonic() - self._checked_at >= REVISION_CHECK:
            with self.db.engine.connect() as conn:
                self._refresh(conn)
        snap = self._snapshot
        if snap is not None and snap.revision == self._revision:
            spam, ham = snap.lookup(tokens)
            return spam, ham, self._learned
        self._start_snapshot_load()
        with self.db.engine.connect() as conn:
            cache = self._cache
            keys = tokens.tolist()
            pairs = list(map(cache.get, keys))
            missing = [t for t, v in zip(keys, pairs, strict=True) if v is None]
            if missing:
                fetched = self._fetch(conn, missing)
                with self._lock:
                    if len(cache) + len(missing) > CACHE_MAX:
                        cache.clear()
                    for t in missing:
                        cache[t] = fetched.get(t, (0, 0))
                # from what was read, not the cache: emptied just now (here or by another
                # thread), it no longer holds this message's other tokens
                pairs = [v or fetched.get(t, (0, 0)) for t, v in zip(keys, pairs, strict=True)]
        arr = np.array(pairs, dtype=np.float64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1], self._learned

    # --- snapshot -----------------------------------------------------------------
    def _start_snapshot_load(self) -> None:
        now = time.monotonic()
        with self._lock:
            if (
                self._loading
                or now < self._snapshot_after
                or now - self._load_started < SNAPSHOT_INTERVAL
            ):
                return
            self._loading = True
            self._load_started = now
        threading.Thread(target=self._load_quietly, name="bayes-snapshot", daemon=True).start()

    def _load_quietly(self) -> None:
        try:
            self.load_snapshot()
        except Exception:  # noqa: BLE001 - the per-message path keeps working
            pass
        finally:
            with self._lock:
                self._loading = False

    def load_snapshot(self) -> bool:
        """Load every token into memory now (also done in the background on demand).
        False when there are more than SNAPSHOT_MAX tokens."""
        with self.db.engine.connect() as conn:
            # The revision is read first: a learn during the load leaves the snapshot
            # one revision behind, so it is not used and gets reloaded.
            revision = read_counters(conn, (C_REVISION,))[C_REVISION]
            dbapi = conn.connection.driver_connection
            cur = dbapi.cursor()
            try:
                cur.execute("SELECT token, spam, ham FROM bayes_tokens WHERE spam + ham > 0")
                chunks: list[np.ndarray] = []
                total = 0
                while True:
                    rows = cur.fetchmany(200_000)
                    if not rows:
                        break
                    total += len(rows)
                    if total > SNAPSHOT_MAX:
                        self._snapshot_after = time.monotonic() + SNAPSHOT_RETRY
                        self._snapshot = None
                        return False
                    chunks.append(np.array(rows, dtype=np.int64).reshape(-1, 3))
            finally:
                cur.close()
        data = np.concatenate(chunks) if chunks else np.empty((0, 3), dtype=np.int64)
        order = np.argsort(data[:, 0], kind="stable")
        data = data[order]
        self._snapshot = Snapshot(
            revision=revision,
            tokens=np.ascontiguousarray(data[:, 0]),
            spam=data[:, 1].astype(np.int32),
            ham=data[:, 2].astype(np.int32),
        )
        return True

    def _fetch(self, conn, tokens: list[int]) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        dbapi = conn.connection.driver_connection
        cur = dbapi.cursor()
        try:
            if self._pg:
                cur.execute(
                    "SELECT token, spam, ham FROM bayes_tokens WHERE token = ANY(%s)", (tokens,)
                )
                for t, s, h in cur.fetchall():
                    out[t] = (s, h)
            else:
                step = 900  # below SQLite's bound-parameter limit on any build
                for i in range(0, len(tokens), step):
                    chunk = tokens[i : i + step]
                    cur.execute(
                        "SELECT token, spam, ham FROM bayes_tokens WHERE token IN ({})".format(
                            ",".join("?" * len(chunk))
                        ),
                        chunk,
                    )
                    for t, s, h in cur.fetchall():
                        out[t] = (s, h)
        finally:
            cur.close()
        return out

    def token_count(self) -> int:
        with self.db.session() as session:
            return int(session.execute(text("SELECT COUNT(*) FROM bayes_tokens")).scalar() or 0)

    # --- learning -----------------------------------------------------------------
    def learn_many(self, messages: Iterable[bytes], is_spam: bool) -> list[LearnOutcome]:
        """Learn a batch in one transaction; counts of the whole batch are summed first
        so each token is written once per batch."""
        items: list[tuple[str, np.ndarray] | None] = []
        for raw in messages:
            try:
                pm = parse_message(raw)
                toks = message_tokens(pm)
            except Exception:  # noqa: BLE001 - an unreadable message is a failed learn
                items.append(None)
                continue
            if len(toks) == 0 or not _has_content(pm):
                items.append(None)
                continue
            items.append((message_digest(raw), toks))

        outcomes: list[LearnOutcome] = [LearnOutcome.FAILED] * len(items)
        digests = [it[0] for it in items if it is not None]
        if not digests:
            return outcomes
        with self.db.session() as session:
            conn = session.connection()
            known: dict[str, bool] = {}
            for i in range(0, len(digests), 500):
                chunk = digests[i : i + 500]
                rows = conn.execute(
                    text("SELECT digest, is_spam FROM bayes_learned WHERE digest IN :d").bindparams(
                        bindparam("d", expanding=True)
                    ),
                    {"d": chunk},
                )
                known.update({d: bool(s) for d, s in rows})
            spam_delta: dict[int, int] = {}
            ham_delta: dict[int, int] = {}
            new_rows: list[dict] = []
            moved: list[str] = []
            seen_in_batch: set[str] = set()
            n_new = n_moved = 0
            for idx, item in enumerate(items):
                if item is None:
                    continue
                digest, toks = item
                if digest in seen_in_batch or known.get(digest) is is_spam:
                    outcomes[idx] = LearnOutcome.DUPLICATE
                    continue
                seen_in_batch.add(digest)
                plus, minus = (spam_delta, ham_delta) if is_spam else (ham_delta, spam_delta)
                for t in toks.tolist():
                    plus[t] = plus.get(t, 0) + 1
                if digest in known:  # learned as the other class: move it
                    for t in toks.tolist():
                        minus[t] = minus.get(t, 0) - 1
                    moved.append(digest)
                    n_moved += 1
                    outcomes[idx] = LearnOutcome.RELEARNED
                else:
                    new_rows.append({"d": digest, "s": is_spam})
                    n_new += 1
                    outcomes[idx] = LearnOutcome.LEARNED
            if new_rows:
                conn.execute(
                    text(
                        "INSERT INTO bayes_learned (digest, is_spam, learned_at) "
                        "VALUES (:d, :s, CURRENT_TIMESTAMP)"
                    ),
                    new_rows,
                )
            if moved:
                conn.execute(
                    text("UPDATE bayes_learned SET is_spam = :s WHERE digest = :d"),
                    [{"d": d, "s": is_spam} for d in moved],
                )
            self._write_tokens(conn, spam_delta, ham_delta)
            plus_name, minus_name = (
                (C_LEARNED_SPAM, C_LEARNED_HAM) if is_spam else (C_LEARNED_HAM, C_LEARNED_SPAM)
            )
            if n_new or n_moved:
                bump_counters(
                    conn, {plus_name: n_new + n_moved, minus_name: -n_moved, C_REVISION: 1}
                )
        self._checked_at = 0.0  # our own learn: look at the revision on the next scan
        return outcomes

    def _write_tokens(self, conn, spam_delta: dict[int, int], ham_delta: dict[int, int]) -> None:
        keys = set(spam_delta) | set(ham_delta)
        if not keys:
            return
        rows = []
        for t in keys:
            ds = spam_delta.get(t, 0)
            dh = ham_delta.get(t, 0)
            rows.append((t, max(ds, 0), max(dh, 0), ds, dh))
        # Upsert; counts never go below zero (a relearn of tokens another host pruned).
        sql = (
            "INSERT INTO bayes_tokens (token, spam, ham) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (token) DO UPDATE SET "
            "spam = CASE WHEN bayes_tokens.spam + {p} < 0 THEN 0 ELSE bayes_tokens.spam + {p} END, "
            "ham = CASE WHEN bayes_tokens.ham + {p} < 0 THEN 0 ELSE bayes_tokens.ham + {p} END"
        )
        dbapi = conn.connection.driver_connection
        cur = dbapi.cursor()
        try:
            if self._pg:
                stmt = sql.format(p="%s")
                params = [(t, s, h, ds, ds, dh, dh) for t, s, h, ds, dh in rows]
            else:
                stmt = sql.format(p="?")
                params = [(t, s, h, ds, ds, dh, dh) for t, s, h, ds, dh in rows]
            # Sorted keys: concurrent learners on PostgreSQL lock rows in one order
            # and cannot deadlock each other.
            params.sort(key=lambda r: r[0])
            cur.executemany(stmt, params)
        finally:
            cur.close()

    # --- classifying --------------------------------------------------------------
    def classify(self, pm: ParsedMessage, min_learns: int) -> BayesVerdict | None:
        """The spam probability, or None while either class has fewer than
        ``min_learns`` learned messages (too little data to speak)."""
        toks = message_tokens(pm)
        if len(toks) == 0:
            return None
        spam, ham, (n_spam, n_ham) = self.counts(toks)
        if n_spam < min_learns or n_ham < min_learns or n_spam == 0 or n_ham == 0:
            return None
        return combine(spam, ham, n_spam, n_ham)


def combine(spam: np.ndarray, ham: np.ndarray, n_spam: int, n_ham: int) -> BayesVerdict | None:
    seen = (spam + ham) > 0
    spam, ham = spam[seen], ham[seen]
    if len(spam) == 0:
        return None
    sr = spam / n_spam
    hr = ham / n_ham
    p = sr / (sr + hr)
    n = spam + ham
    f = (ROBINSON_S * ROBINSON_X + n * p) / (ROBINSON_S + n)
    dev = np.abs(f - 0.5)
    keep = dev > MIN_DEVIATION
    f = f[keep]
    if len(f) == 0:
        return BayesVerdict(0.5, 0)
    if len(f) > MAX_TOKENS:
        f = f[np.argsort(-np.abs(f - 0.5))[:MAX_TOKENS]]
    f = np.clip(f, 1e-6, 1 - 1e-6)
    k = len(f)
    # Small tail probability of the first test: the tokens are significantly hammy;
    # of the second: significantly spammy. Which is the more significant decides.
    log_q_ham = log_chi2q(-2.0 * float(np.log(f).sum()), 2 * k)
    log_q_spam = log_chi2q(-2.0 * float(np.log1p(-f).sum()), 2 * k)
    log_ratio = log_q_ham - log_q_spam
    z = (log_ratio - CALIBRATION_CENTER * k / MAX_TOKENS) / CALIBRATION_SCALE
    probability = 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, z))))
    return BayesVerdict(probability, k, log_ratio, log_q_spam)


def _has_content(pm: ParsedMessage) -> bool:
    # A message has header fields; a file without any (a JSON file, a note) is not
    # learned, so a directory with stray files does not teach Bayes junk.
    return bool(pm.header_names) and bool(pm.text.strip() or pm.subject)

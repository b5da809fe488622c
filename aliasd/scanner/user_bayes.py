"""Per-user Bayes (``bayes_per_user``), as SpamAssassin and rspamd offer it: what a
user teaches (from the web, the quarantine, spam@/ham@) is counted for that user only,
and their mail is classified on the global counts plus their own. One user's learning
never moves another user's verdicts; ``aliasd learn-spam``/``learn-ham`` still teach
everyone (the global counts)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from aliasd.db import Database
from aliasd.models import UserBayesLearned, UserBayesToken
from aliasd.scanner.base import LearnOutcome
from aliasd.scanner.bayes import BayesStore, BayesVerdict, combine
from aliasd.scanner.message import ParsedMessage, message_digest, parse_message
from aliasd.scanner.tokens import message_tokens

CHUNK = 900  # bound parameters per IN (...) on any SQLite build


class UserBayes:
    def __init__(self, database: Database) -> None:
        self.db = database

    def counts(self, owner_id: int, tokens: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        keys = [int(t) for t in tokens.tolist()]
        found: dict[int, tuple[int, int]] = {}
        with self.db.session() as session:
            learned = dict(session.execute(
                select(UserBayesLearned.is_spam, func.count())
                .where(UserBayesLearned.owner_id == owner_id)
                .group_by(UserBayesLearned.is_spam)).all())
            if learned:
                for i in range(0, len(keys), CHUNK):
                    rows = session.execute(select(
                        UserBayesToken.token, UserBayesToken.spam, UserBayesToken.ham).where(
                        UserBayesToken.owner_id == owner_id,
                        UserBayesToken.token.in_(keys[i:i + CHUNK])))
                    found.update({t: (s, h) for t, s, h in rows})
        pairs = np.array([found.get(t, (0, 0)) for t in keys], dtype=np.float64).reshape(-1, 2)
        return pairs[:, 0], pairs[:, 1], (learned.get(True, 0), learned.get(False, 0))

    def learn(self, owner_id: int, raw: bytes, is_spam: bool) -> LearnOutcome:
        try:
            pm = parse_message(raw)
            toks = message_tokens(pm)
        except Exception:  # noqa: BLE001 - an unreadable message is a failed learn
            return LearnOutcome.FAILED
        if len(toks) == 0:
            return LearnOutcome.FAILED
        digest = message_digest(raw)
        with self.db.session() as session:
            known = session.get(UserBayesLearned, (owner_id, digest))
            if known is not None and known.is_spam == is_spam:
                return LearnOutcome.DUPLICATE
            step = 1 if known is None else 0  # a move takes the count off the other class
            delta_spam = 1 if is_spam else (-1 if known is not None else 0)
            delta_ham = 1 if not is_spam else (-1 if known is not None else 0)
            insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
            for token in sorted({int(t) for t in toks.tolist()}):  # one order: no deadlocks
                stmt = insert(UserBayesToken).values(owner_id=owner_id, token=token,
                                                     spam=max(delta_spam, 0),
                                                     ham=max(delta_ham, 0))
                session.execute(stmt.on_conflict_do_update(
                    index_elements=["owner_id", "token"],
                    set_={"spam": func.max(0, UserBayesToken.spam + delta_spam)
                          if session.bind.dialect.name == "sqlite"
                          else func.greatest(0, UserBayesToken.spam + delta_spam),
                          "ham": func.max(0, UserBayesToken.ham + delta_ham)
                          if session.bind.dialect.name == "sqlite"
                          else func.greatest(0, UserBayesToken.ham + delta_ham)}))
            if known is None:
                session.add(UserBayesLearned(owner_id=owner_id, digest=digest, is_spam=is_spam))
            else:
                known.is_spam = is_spam
        return LearnOutcome.LEARNED if step else LearnOutcome.RELEARNED


def classify_for_owner(store: BayesStore, user: UserBayes, pm: ParsedMessage, owner_id: int,
                       min_learns: int) -> BayesVerdict | None:
    """Global counts plus the owner's own; the same rule as BayesStore.classify."""
    toks = message_tokens(pm)
    if len(toks) == 0:
        return None
    spam, ham, (n_spam, n_ham) = store.counts(toks)
    own_spam, own_ham, (own_n_spam, own_n_ham) = user.counts(owner_id, toks)
    n_spam, n_ham = n_spam + own_n_spam, n_ham + own_n_ham
    if n_spam < min_learns or n_ham < min_learns or n_spam == 0 or n_ham == 0:
        return None
    return combine(spam + own_spam, ham + own_ham, n_spam, n_ham)


def learner_for(settings, database: Database, owner_id: int | None,
                global_learn: Callable[[bytes, bool], object]) -> Callable[[bytes, bool], str]:
    """What teaching from an owner's mail does: their own counts with ``bayes_per_user``
    (bundled scanner), otherwise ``global_learn`` (the scanner's learn)."""
    if settings.bayes_per_user and owner_id is not None and settings.scanner_backend == "bundled":
        store = UserBayes(database)
        return lambda raw, is_spam: str(store.learn(owner_id, raw, is_spam))
    return lambda raw, is_spam: str(global_learn(raw, is_spam))

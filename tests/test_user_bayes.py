"""Per-user Bayes on SQLite and PostgreSQL: what one user teaches moves their own
verdicts and nobody else's; without the option everything is global as before."""

from __future__ import annotations

from sqlalchemy import func, select

from aliasd.models import UserBayesLearned
from aliasd.scanner.base import LearnOutcome
from aliasd.scanner.bundled import BundledScanner
from aliasd.scanner.message import parse_message
from aliasd.scanner.result import ScanRequest
from aliasd.scanner.tokens import message_tokens
from aliasd.scanner.user_bayes import UserBayes, classify_for_owner, learner_for
from tests.harness.webapp import add_user


def _msg(i: int, subject: str, body: str) -> bytes:
    return (f"From: sender{i}@example.org\r\nTo: someone@example.net\r\nSubject: {subject} {i}\r\n"
            f"Message-ID: <{subject.replace(' ', '')}{i}@example.org>\r\n"
            f"Date: Sat, 05 Dec 2026 10:00:00 +0000\r\n\r\n{body} reference {i}\r\n").encode()


HAM = ("Minutes of the project meeting: the release schedule, the budget review and the "
       "hiring plan were discussed; action items follow for engineering and finance teams.")
SPAM = ("Cheap pills online pharmacy discount viagra cialis no prescription needed order now "
        "limited offer best price guaranteed worldwide shipping.")
GARDEN = ("Seasonal gardening newsletter: tulip bulbs, compost tips, pruning roses, lawn care, "
          "greenhouse tomatoes, organic fertiliser, watering schedules, hedge trimming advice.")


def _setup(settings, database):
    alice = add_user(database, "alice")
    bob = add_user(database, "bob")
    s = settings.with_overrides(bayes_min_learns=3, bayes_per_user=True)
    scanner = BundledScanner(s, database)
    scanner.learn_many([_msg(i, "Meeting notes", HAM) for i in range(6)], False)
    scanner.learn_many([_msg(i, "Pharmacy deal", SPAM) for i in range(6)], True)
    return s, scanner, alice, bob


def test_a_users_own_learning_moves_only_their_verdicts(settings, database):
    s, scanner, alice, bob = _setup(settings, database)
    user = UserBayes(database)
    teach = learner_for(s, database, alice, scanner.learn)
    assert [teach(_msg(i, "Garden news", GARDEN), True) for i in range(5)] == ["learned"] * 5
    assert teach(_msg(0, "Garden news", GARDEN), True) == "duplicate"
    test = parse_message(_msg(99, "Garden news", GARDEN))
    for_alice = classify_for_owner(scanner.bayes, user, test, alice, s.bayes_min_learns)
    for_bob = classify_for_owner(scanner.bayes, user, test, bob, s.bayes_min_learns)
    assert for_alice.probability > 0.9 > for_bob.probability
    assert for_bob == scanner.bayes.classify(test, s.bayes_min_learns)  # bob: global only
    raw = _msg(99, "Garden news", GARDEN)
    alice_scan = scanner.scan(ScanRequest(message=raw, owner_id=alice))
    bob_scan = scanner.scan(ScanRequest(message=raw, owner_id=bob))
    assert "BAYES_SPAM" in alice_scan.symbol_names()
    assert "BAYES_SPAM" not in bob_scan.symbol_names()
    assert scanner.stats()["bayes_learned_spam"] == 6  # the global counts did not move
    scanner.close()


def test_relearning_moves_a_users_counts_to_the_other_class(settings, database):
    s, scanner, alice, _bob = _setup(settings, database)
    user = UserBayes(database)
    raw = _msg(1, "Garden news", GARDEN)
    assert user.learn(alice, raw, True) == LearnOutcome.LEARNED
    assert user.learn(alice, raw, False) == LearnOutcome.RELEARNED
    spam, ham, learned = user.counts(alice, message_tokens(parse_message(raw)))
    assert learned == (0, 1) and spam.sum() == 0 and ham.sum() > 10
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(UserBayesLearned)) == 1
    scanner.close()


def test_without_the_option_teaching_is_global(settings, database):
    _s, scanner, alice, _bob = _setup(settings, database)
    teach = learner_for(settings, database, alice, scanner.learn)  # bayes_per_user off
    assert teach(_msg(1, "Garden news", GARDEN), True) == "learned"
    assert scanner.stats()["bayes_learned_spam"] == 7
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(UserBayesLearned)) == 0
    scanner.close()

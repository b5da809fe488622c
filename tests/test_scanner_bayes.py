"""The bundled scanner with its Bayes statistics in a real database (SQLite and
PostgreSQL): learning, duplicates, relearning, the minimum before Bayes speaks,
sharing between processes, counters, the block list and database failures."""

from __future__ import annotations

import concurrent.futures
import itertools
from pathlib import Path

import pytest
from sqlalchemy import select, text

from aliasd.db import Database
from aliasd.models import BayesLearned, BayesToken, BlockRule, Counter
from aliasd.scanner import LearnOutcome, ScannerError, ScanRequest, build_scanner
from aliasd.scanner import bayes as bayes_mod
from aliasd.scanner.bundled import BundledScanner
from aliasd.scanner.message import parse_message
from aliasd.scanner.tokens import message_tokens
from tests.harness.net import free_port

MAIL = Path(__file__).parent / "data" / "mail"
HAM = ["ham_github.eml", "ham_colleague.eml", "ham_invoice.eml", "ham_family.eml"]
SPAM = ["spam_pharmacy.eml", "spam_lottery.eml", "spam_loan.eml", "spam_crypto.eml"]


def mail(name: str) -> bytes:
    return (MAIL / name).read_bytes()


@pytest.fixture
def scanner(settings, database):
    sc = build_scanner(settings.with_overrides(bayes_min_learns=2), database)
    assert isinstance(sc, BundledScanner)
    yield sc
    sc.close()


def counters(database) -> dict[str, int]:
    with database.session() as s:
        return {c.name: c.value for c in s.scalars(select(Counter))}


def token_counts(database, raw: bytes) -> tuple[int, int]:
    toks = message_tokens(parse_message(raw)).tolist()
    with database.session() as s:
        rows = s.execute(select(BayesToken.spam, BayesToken.ham).where(BayesToken.token.in_(toks))).all()
    assert len(rows) == len(toks)
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


def test_learn_duplicate_and_relearn_move_the_counts(scanner, database):
    raw = mail("spam_lottery.eml")
    n = len(message_tokens(parse_message(raw)))
    assert scanner.learn(raw, True) is LearnOutcome.LEARNED
    assert token_counts(database, raw) == (n, 0)
    # the same message again, even as relayed with one more Received header: a duplicate
    relayed = b"Received: from relay.example by mx2.example.net; Fri, 17 May 2024 11:03:00 +0000\r\n" + raw
    assert scanner.learn(relayed, True) is LearnOutcome.DUPLICATE
    assert token_counts(database, raw) == (n, 0)
    assert counters(database)["bayes_learned_spam"] == 1
    # learned the other way: its counts move from spam to ham
    assert scanner.learn(raw, False) is LearnOutcome.RELEARNED
    assert token_counts(database, raw) == (0, n)
    c = counters(database)
    assert (c["bayes_learned_spam"], c["bayes_learned_ham"]) == (0, 1)
    with database.session() as s:
        assert s.scalars(select(BayesLearned.is_spam)).all() == [False]
    assert scanner.learn(raw, False) is LearnOutcome.DUPLICATE


def test_unlearnable_input_fails_without_touching_the_tables(scanner, database):
    assert scanner.learn(b"", True) is LearnOutcome.FAILED
    assert scanner.learn(b'{"id": "00001", "text": "not a message"}', True) is LearnOutcome.FAILED
    with database.session() as s:
        assert s.scalar(select(text("count(*)")).select_from(BayesToken)) == 0


def test_learn_many_batches_and_reports_each_message(scanner, database):
    batch = [mail(n) for n in SPAM] + [mail(SPAM[0]), b""]
    out = scanner.learn_many(batch, True)
    assert out == [LearnOutcome.LEARNED] * 4 + [LearnOutcome.DUPLICATE, LearnOutcome.FAILED]
    assert counters(database)["bayes_learned_spam"] == 4


def test_bayes_speaks_only_after_min_learns_of_each_class(scanner):
    probe = parse_message(mail("spam_crypto.eml"))
    ham_probe = ScanRequest(message=mail("ham_family.eml"))
    scanner.learn(mail("spam_loan.eml"), True)
    scanner.learn(mail("ham_colleague.eml"), False)
    scanner.learn(mail("spam_pharmacy.eml"), True)
    assert scanner.bayes.classify(probe, 2) is None  # 2 spam, 1 ham: silent
    assert "BAYES_HAM" not in scanner.scan(ham_probe).symbol_names()
    scanner.learn(mail("ham_invoice.eml"), False)
    verdict = scanner.bayes.classify(probe, 2)
    assert verdict is not None and verdict.probability > 0.5
    assert "BAYES_HAM" in scanner.scan(ham_probe).symbol_names()


def test_bayes_symbol_scales_with_probability():
    from aliasd.scanner.bayes import BayesVerdict
    from aliasd.scanner.bundled import bayes_symbol

    def symbol(p: float, tokens: int = 40):
        return bayes_symbol(BayesVerdict(p, tokens))

    low, high = symbol(0.5), symbol(0.925)
    assert low.name == high.name == "BAYES_SPAM"
    assert low.score == 3.0 and 5.8 < high.score < 5.9  # alone, not past add-header
    assert high.options == ("92.50%",)
    # Confident Bayes marks spam on its own (new spam often sits just above 0.9).
    sure = symbol(0.94)
    assert sure.score == 7.0 and sure.options == ("94.00%",)
    ham, unsure_ham = symbol(0.05), symbol(0.4)
    assert ham.name == unsure_ham.name == "BAYES_HAM"
    assert ham.score == -3.0 < unsure_ham.score < 0
    # A handful of significant tokens is too little evidence either way.
    assert symbol(0.99, 11) is None and symbol(0.01, 3) is None
    assert symbol(0.99, 12).score == 7.0


def test_held_out_messages_are_classified(scanner):
    for name in SPAM[:3]:
        assert scanner.learn(mail(name), True) is LearnOutcome.LEARNED
    for name in HAM[:3]:
        assert scanner.learn(mail(name), False) is LearnOutcome.LEARNED
    spam = scanner.scan(ScanRequest(message=mail("spam_crypto.eml")))
    ham = scanner.scan(ScanRequest(message=mail("ham_family.eml")))
    assert scanner.bayes.classify(parse_message(mail("spam_crypto.eml")), 2).probability > 0.9
    # three ham learned: the family mail shares few words with them, but enough
    assert scanner.bayes.classify(parse_message(mail("ham_family.eml")), 2).probability < 0.5
    assert "BAYES_HAM" in ham.symbol_names()
    assert spam.score > ham.score
    assert ham.action.value == "no action"


def test_statistics_are_shared_through_the_database(scanner, database, settings, monkeypatch):
    monkeypatch.setattr(bayes_mod, "REVISION_CHECK", 0.0)
    other_db = Database(database.url)  # a second "host": its own engine and caches
    try:
        other = BundledScanner(settings.with_overrides(bayes_min_learns=2), other_db)
        probe = ScanRequest(message=mail("ham_family.eml"))
        assert "BAYES_HAM" not in other.scan(probe).symbol_names()  # caches the tokens
        for name in SPAM[:2]:
            scanner.learn(mail(name), True)
        for name in HAM[:3]:
            scanner.learn(mail(name), False)
        assert "BAYES_HAM" in other.scan(probe).symbol_names()
        other.close()
    finally:
        other_db.dispose()


def test_scans_are_counted_by_action(scanner, database):
    scanner.scan(ScanRequest(message=mail("ham_family.eml")))
    spam = scanner.scan(ScanRequest(message=mail("spam_pharmacy.eml")))
    scanner.scan(ScanRequest(message=mail("ham_invoice.eml")))
    assert spam.action.value == "reject"  # 15+: missing Message-ID, date 4 days ahead, ...
    scanner.flush()
    c = counters(database)
    assert c["scanned:no action"] == 2
    assert c["scanned:reject"] == 1
    stats = scanner.stats()
    assert stats["scanned:no action"] == 2 and stats["tokens"] == 0


def test_blocklisted_reads_enabled_rules_of_every_kind(scanner, database):
    with database.session() as s:
        s.add_all([
            BlockRule(kind="sender_domain", value="fast-loans.example.top", pattern="/x/",
                      reject_text="t", source="manual", enabled=True),
            BlockRule(kind="sender_domain", value="crypto-profit.example.xyz", pattern="/y/",
                      reject_text="t", source="manual", enabled=False),
            BlockRule(kind="regex", value="^Subject:.*never in these messages",
                      pattern="/^Subject:.*never in these messages/", reject_text="t",
                      source="manual", enabled=True),
        ])
    loan = scanner.scan(ScanRequest(message=mail("spam_loan.eml"), envelope_from="info@fast-loans.example.top"))
    assert loan.action.value == "reject"
    assert {s.name: s.options for s in loan.symbols}["BLOCKLISTED"] == ("fast-loans.example.top",)
    crypto = scanner.scan(ScanRequest(message=mail("spam_crypto.eml")))
    assert "BLOCKLISTED" not in crypto.symbol_names()  # rule disabled
    ham = scanner.scan(ScanRequest(message=mail("ham_colleague.eml"), envelope_from="me@example.net"))
    assert "BLOCKLISTED" not in ham.symbol_names()  # the regex rule matches none of its headers


def test_concurrent_scans_agree(scanner):
    for name in SPAM[:3]:
        scanner.learn(mail(name), True)
    for name in HAM[:3]:
        scanner.learn(mail(name), False)
    requests = [ScanRequest(message=mail(n)) for n in HAM + SPAM] * 5
    expected = [scanner.scan(r).spamd_result_header() for r in requests]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: scanner.scan(r).spamd_result_header(), requests))
    assert got == expected


def test_database_down_is_a_scanner_error_not_a_verdict(settings):
    dead = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/aliasd", timeout=1)
    sc = BundledScanner(settings, dead)
    with pytest.raises(ScannerError):
        sc.scan(ScanRequest(message=mail("ham_family.eml")))
    with pytest.raises(ScannerError):
        sc.learn(mail("ham_family.eml"), False)
    sc.close()
    dead.dispose()


def test_build_scanner_selects_the_backend(settings, database):
    from aliasd.scanner.rspamd import RspamdScanner

    assert isinstance(build_scanner(settings.with_overrides(scanner_backend="rspamd"), None), RspamdScanner)
    with pytest.raises(ScannerError):
        build_scanner(settings, None)


def test_snapshot_lookup_matches_binary_search():
    import numpy as np

    from aliasd.scanner.bayes import Snapshot

    rng = np.random.default_rng(7)
    keys = np.unique(rng.integers(-(2**63), 2**63 - 1, 50_000, dtype=np.int64))
    spam = rng.integers(1, 90, len(keys)).astype(np.int32)
    ham = rng.integers(1, 90, len(keys)).astype(np.int32)
    snap = Snapshot(1, keys, spam, ham)
    probe = np.unique(np.concatenate([
        rng.choice(keys, 900), rng.integers(-(2**63), 2**63 - 1, 400, dtype=np.int64),
        keys[:2], keys[-2:], np.array([-(2**63), 2**63 - 1], dtype=np.int64),
    ]))
    got_spam, got_ham = snap.lookup(probe)
    i = np.searchsorted(keys, probe)
    i[i >= len(keys)] = 0
    found = keys[i] == probe
    assert (got_spam == np.where(found, spam[i], 0)).all()
    assert (got_ham == np.where(found, ham[i], 0)).all()
    assert found.sum() >= 800  # choice() may pick a key twice


def test_snapshot_is_used_only_while_current(scanner, database):
    for name in SPAM[:3]:
        scanner.learn(mail(name), True)
    for name in HAM[:3]:
        scanner.learn(mail(name), False)
    probe = ScanRequest(message=mail("spam_crypto.eml"))
    via_db = scanner.scan(probe).spamd_result_header()
    assert scanner.bayes.load_snapshot() is True
    assert scanner.scan(probe).spamd_result_header() == via_db
    before = scanner.bayes.classify(parse_message(mail("spam_crypto.eml")), 2).probability
    scanner.learn(mail("spam_crypto.eml"), True)  # the snapshot is now one revision behind
    after = scanner.bayes.classify(parse_message(mail("spam_crypto.eml")), 2).probability
    assert after > before  # the learn counts at once, through the database


def test_spf_setting_switches_the_check(settings, database):
    from aliasd.scanner.spf import zone_lookup

    zone = zone_lookup({("fastmail.example.org", "TXT"): ["v=spf1 ip4:203.0.113.0/24 -all"]})
    request = ScanRequest(message=mail("ham_colleague.eml"), envelope_from="anna.berg@fastmail.example.org",
                          client_addr="198.51.100.7", helo="mail.fastmail.example.org")
    on = BundledScanner(settings.with_overrides(spf_enabled=True), database, dns_lookup=zone)
    off = BundledScanner(settings, database, dns_lookup=zone)
    result = on.scan(request)
    assert {s.name: s.options[0] for s in result.symbols}["R_SPF_FAIL"] == "fastmail.example.org"
    assert not any(n.startswith("R_SPF_") for n in off.scan(request).symbol_names())
    request.client_addr = "203.0.113.25"
    assert "R_SPF_ALLOW" in on.scan(request).symbol_names()
    on.close()
    off.close()


def html_mail(body: str) -> bytes:
    """A colleague's mail (headers as learned ham has them) with an HTML body."""
    head = mail("ham_colleague.eml").split(b"\nMIME-Version:")[0]
    return head + (b"\nMIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n<html><body>"
                   + body.encode() + b"</body></html>\n")


def test_padding_hidden_from_the_reader_does_not_pull_bayes_to_ham(scanner):
    """Word salad: spam hides the ordinary words of people's mail where the reader does
    not see them. Bayes learns those words apart from the visible ones, so the padding
    cannot vote with the learned ham's words."""
    for name in SPAM:
        scanner.learn(mail(name), True)
    for name in HAM:
        scanner.learn(mail(name), False)
    pitch = "Best prices on viagra and cialis! No prescription needed, order now and save up to 80%"
    padding = " ".join(parse_message(mail(name)).text for name in HAM)

    def p(body: str) -> float:
        verdict = scanner.bayes.classify(parse_message(html_mail(body)), 2)
        assert verdict is not None
        return verdict.probability

    alone = p(f"<p>{pitch}</p>")
    shown = p(f"<p>{pitch}</p><p>{padding}</p>")
    hidden = p(f'<p>{pitch}</p><div style="display:none">{padding}</div>')
    tiny = p(f'<p>{pitch}</p><span style="font-size:1px">{padding}</span>')
    assert shown < 0.5 < alone  # read by the reader, the ham's words do count
    assert hidden > 0.5 and tiny > 0.5  # hidden, they are not the ham's words


def test_bayes_leaning_to_ham_on_text_that_also_carries_many_spam_words_counts_as_unsure(scanner):
    """Word salad with its pitch in view: the learned ham's words outnumber the spam's, so
    Bayes leans to ham, yet the spam words alone are far too many for chance. Such Bayes
    is unsure: mild spam evidence (BAYES_MIXED), never the -3 that takes back what the
    rules found. Text with the ham's words alone stays BAYES_HAM."""
    def vocabulary(initials: str) -> list[str]:
        return ["".join(p) for p in itertools.product(initials, "aeiou", ("lt", "rn", "sk", "mp"))]

    ham_words, spam_words = vocabulary("bdfgklmnp")[:150], vocabulary("rstvwz")[:120]

    def words_mail(words: list[str], subject: str = "note") -> bytes:
        return (f"From: a@example.org\nTo: b@example.net\nSubject: {subject}\n\n"
                + " ".join(words) + "\n").encode()

    for i in range(6):
        scanner.learn(words_mail(ham_words[i::2] + ham_words, f"ham {i}"), False)
        scanner.learn(words_mail(spam_words[i::2] + spam_words, f"offer {i}"), True)

    def bayes(words: list[str]):
        result = scanner.scan(ScanRequest(message=words_mail(words)))
        [symbol] = [s for s in result.symbols if s.name.startswith("BAYES_")]
        return symbol

    ham = bayes(ham_words[:100])
    assert (ham.name, ham.score) == ("BAYES_HAM", -3.0)
    salad = bayes(ham_words[:100] + spam_words[:30])
    leaning = float(salad.options[0].rstrip("%"))
    assert (salad.name, salad.score) == ("BAYES_MIXED", 2.0) and leaning < 50
    assert bayes(spam_words[:80]).name == "BAYES_SPAM"


def test_word_hash_memory_stays_bounded_on_a_never_ending_vocabulary(monkeypatch):
    """A long-running milter meets new words (names, codes, misspellings) for ever: the
    kept word hashes are bounded, and emptying them changes no token."""
    from aliasd.scanner import tokens

    monkeypatch.setattr(tokens, "WORD_HASH_CACHE", 1_000)
    monkeypatch.setattr(tokens, "_word_hashes", {})
    raw = mail("spam_pharmacy.eml")
    before = message_tokens(parse_message(raw)).tolist()
    for i in range(30):
        body = " ".join(f"word{i}x{j}" for j in range(200))
        message_tokens(parse_message(b"Subject: news\n\n" + body.encode()))
        assert len(tokens._word_hashes) <= tokens.WORD_HASH_CACHE
    assert message_tokens(parse_message(raw)).tolist() == before


def test_token_counts_read_without_a_snapshot_stay_bounded_in_memory(scanner, monkeypatch):
    """Past SNAPSHOT_MAX learned tokens a worker reads counts from the database and keeps
    them: at most CACHE_MAX, with the same verdicts as the snapshot gives."""
    for name in SPAM:
        scanner.learn(mail(name), True)
    for name in HAM:
        scanner.learn(mail(name), False)
    assert scanner.bayes.load_snapshot() is True
    with_snapshot = {n: scanner.bayes.classify(parse_message(mail(n)), 2) for n in SPAM + HAM}
    monkeypatch.setattr(bayes_mod, "SNAPSHOT_MAX", 0)
    monkeypatch.setattr(bayes_mod, "CACHE_MAX", 300)
    scanner.bayes._snapshot = None
    assert scanner.bayes.load_snapshot() is False  # too many tokens: no snapshot
    for n in SPAM + HAM:
        assert scanner.bayes.classify(parse_message(mail(n)), 2) == with_snapshot[n]
        assert len(scanner.bayes._cache) <= bayes_mod.CACHE_MAX

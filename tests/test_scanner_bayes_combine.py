"""Robinson/Fisher chi-square combining on crafted token statistics, and the Bayes
structure tokens (HTML tags, link paths, MIME layout). Pure functions: no database."""

from __future__ import annotations

import numpy as np

from aliasd.scanner import bayes as bayes_mod
from aliasd.scanner.bayes import combine
from aliasd.scanner.message import parse_message
from aliasd.scanner.tokens import _hashes, _meta, message_tokens

N = 1000  # learned messages of each class


def stats(*groups: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(how many tokens, spam count, ham count) groups -> count arrays."""
    spam = np.concatenate([np.full(n, s, dtype=np.float64) for n, s, _ in groups])
    ham = np.concatenate([np.full(n, h, dtype=np.float64) for n, _, h in groups])
    return spam, ham


def test_clear_spam_and_clear_ham():
    spam, ham = stats((30, 50, 0))
    v = combine(spam, ham, N, N)
    assert v.probability > 0.999 and v.tokens_used == 30 and v.log_ratio > 50
    spam, ham = stats((30, 0, 50))
    v = combine(spam, ham, N, N)
    assert v.probability < 0.001 and v.log_ratio < -50


def test_strong_evidence_both_ways_still_says_which_way_it_leans():
    # Both chi-square tests are far beyond any threshold (Fisher's probability would be
    # exactly 0.5 for all three); their log tail probabilities still tell which
    # evidence is stronger.
    balanced = combine(*stats((20, 80, 0), (20, 0, 80)), N, N)
    more_spam = combine(*stats((20, 80, 0), (20, 0, 8)), N, N)
    more_ham = combine(*stats((20, 8, 0), (20, 0, 80)), N, N)
    assert more_ham.log_ratio < balanced.log_ratio < more_spam.log_ratio
    assert 0 < balanced.log_ratio < 10  # Robinson's x = 0.6 leans a little to spam
    assert more_ham.probability < balanced.probability < more_spam.probability


def test_calibration_centre_grows_with_the_tokens_combined():
    # The spam lean of a balanced message comes from Robinson's x > 0.5 on every token:
    # a message with only a few telling tokens is nearer to undecided than one with 40.
    few = combine(*stats((2, 80, 0), (2, 0, 80)), N, N)
    many = combine(*stats((20, 80, 0), (20, 0, 80)), N, N)
    assert 0.5 <= few.probability < many.probability < 0.9


def test_rare_tokens_count_less_than_common_ones():
    # Seen once in spam: Robinson's f(w) = (s*x + n*p) / (s + n) = (0.096 + 1) / 1.16,
    # about 0.945; seen 50 times: 0.9988. Ten of the first say less than ten of the second.
    rare = combine(*stats((10, 1, 0)), N, N)
    common = combine(*stats((10, 50, 0)), N, N)
    assert 0.5 < rare.probability < common.probability
    assert 0 < rare.log_ratio < common.log_ratio


def test_tokens_near_one_half_and_unseen_tokens_say_nothing():
    # seen equally often in both classes (f = 0.5) or never seen: not counted at all
    spam, ham = stats((100, 7, 7), (100, 0, 0))
    v = combine(spam, ham, N, N)
    assert v.tokens_used == 0 and v.probability == 0.5
    assert combine(*stats((5, 0, 0)), N, N) is None


def test_only_the_most_significant_tokens_are_combined():
    # Many fairly spammy tokens (f about 0.9) do not outvote a few very telling ham
    # tokens only because there are many of them: the MAX_TOKENS most extreme decide.
    spam, ham = stats((500, 9, 1), (bayes_mod.MAX_TOKENS, 0, 200))
    v = combine(spam, ham, N, N)
    assert v.tokens_used == bayes_mod.MAX_TOKENS
    assert v.probability < 0.01


def test_sales_tokens_outweigh_forty_ordinary_words_that_ham_also_uses():
    # Prose spam about a topic learned ham discusses: 40 ordinary words never seen in
    # spam, and many more tokens seen mostly in spam. The 40 ham-like words alone
    # would call it ham; the combined evidence calls it spam.
    ordinary = (40, 0, 30)
    sales = (100, 40, 2)
    assert combine(*stats(ordinary), N, N).probability < 0.01
    v = combine(*stats(ordinary, sales), N, N)
    assert v.tokens_used == 140
    assert v.probability > 0.9


def test_class_sizes_are_normalised():
    # 10 of 100 spam vs 10 of 10,000 ham: a spam token although counts are equal
    spam, ham = stats((20, 10, 10))
    assert combine(spam, ham, 100, 10_000).probability > 0.95
    assert combine(spam, ham, 10_000, 100).probability < 0.05


def test_log_tail_probability_matches_the_closed_form_and_goes_below_floats():
    from aliasd.scanner.bayes import log_chi2q

    # P(chi2 >= 10) with 4 degrees of freedom = exp(-5) * (1 + 5)
    assert abs(log_chi2q(10.0, 4) - (np.log(6) - 5)) < 1e-12
    assert log_chi2q(0.0, 80) == 0.0
    # far beyond the smallest double (exp(-745)): still finite and ordered
    assert log_chi2q(6000.0, 80) < log_chi2q(5000.0, 80) < -2000


HTML_MAIL = (
    b"From: a@shop.example\r\nTo: b@example.org\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
    b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
    b"Cheap offer\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    b'<html><body><font color=3D"#ff0000" size=3D"5">Cheap</font>'
    b'<a href=3D"http://www.deals.example.com/cgi-bin/remove.pl?id=3D12345">x</a>'
    b"</body></html>\r\n--b--\r\n"
)


def test_structure_tokens_html_links_and_mime_layout():
    pm = parse_message(HTML_MAIL)
    assert {"font", "font.color", "font.size", "a.href"} <= pm.html_tags
    assert pm.url_hosts == ["www.deals.example.com"]
    assert pm.url_paths == ["/cgi-bin/remove.pl?id=12345"]
    assert pm.part_types == [
        "multipart/alternative", "text/plain/7bit", "text/html/quoted-printable",
    ]
    meta = _meta(pm)
    for token in ("html:font.color", "urlhost:www.deals.example.com", "urltld:com",
                  "urlpath:cgi-bin", "urlpath:remove.pl", "part:text/html/quoted-printable",
                  "mime:multipart/alternative,text/plain/7bit,text/html/quoted-printable"):
        assert token in meta, token
    # the link's id is per-message noise, not a token
    assert not any(t.startswith("urlpath:") and "12345" in t for t in meta)
    ids = set(message_tokens(pm).tolist())
    assert int(_hashes(["html:font.color"]).view(np.int64)[0]) in ids

"""URL and HTML evidence (evidence.py) and aliasd's own vocabulary rules
(aliasd/data/rules/aliasd.cf): each fires on mail with the trick or the pitch and stays
silent on the realistic ham in tests/data/mail. Pure: no database."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aliasd.scanner import evidence, filerules
from aliasd.scanner.message import parse_message
from aliasd.scanner.result import ScanRequest

MAIL = Path(__file__).parent / "data" / "mail"
SCORING = {"URL_SHORTENER", "URL_OBFUSCATED", "URL_ANCHOR_MISMATCH", "HTML_HIDDEN_TEXT",
           "HTML_FONT_INVISIBLE"}


def symbols(raw: bytes) -> dict[str, tuple]:
    pm = parse_message(raw)
    rules, own = filerules.load(())
    found = [*evidence.url_rules(pm), *evidence.html_rules(pm),
             *filerules.file_rule_symbols(rules, own, pm, ScanRequest(message=raw), set())]
    return {s.name: (s.score, s.options) for s in found}


def html(body: str, subject: str = "hello") -> bytes:
    return (f"From: a@shop.example\nTo: you@example.org\nSubject: {subject}\n"
            "Message-ID: <1@shop.example>\nMIME-Version: 1.0\n"
            "Content-Type: text/html; charset=utf-8\n\n<html><body>" + body + "</body></html>\n").encode()


@pytest.mark.parametrize("name", sorted(p.name for p in MAIL.glob("ham_*.eml")))
def test_ham_gets_no_url_html_or_vocabulary_evidence(name):
    got = symbols((MAIL / name).read_bytes())
    assert not (set(got) & SCORING) and not any(n.startswith("AL_") for n in got), got


def test_shortener_and_obfuscated_links():
    got = symbols(html('<a href="https://bit.ly/3xYz">offer</a> '
                       '<a href="http://www.paypal.com@203.0.113.9/login">PayPal</a>'))
    assert got["URL_SHORTENER"][1] == ("bit.ly",)
    assert got["URL_OBFUSCATED"][1] == ("userinfo 203.0.113.9",)
    assert "numeric host" in symbols(html('<a href="http://3232235777/x">x</a>'))["URL_OBFUSCATED"][1][0]
    assert "escaped host" in symbols(html('<a href="http://%70aypal.com/x">x</a>'))["URL_OBFUSCATED"][1][0]


def test_anchor_text_naming_another_site():
    got = symbols(html('<a href="http://login.evil.example/pp">www.paypal.com</a>'))
    assert got["URL_ANCHOR_MISMATCH"][1] == ("www.paypal.com", "login.evil.example")
    # the same site under another host name is no mismatch
    same = symbols(html('<a href="https://click.paypal.com/x"><b>https://www.paypal.com/</b></a>'))
    assert "URL_ANCHOR_MISMATCH" not in same


def test_word_salad_hidden_from_the_reader():
    salad = " ".join(["garden weather meeting lunch report"] * 20)
    got = symbols(html('<p>Buy cheap meds: viagra, cialis without prescription</p>'
                       f'<div style="display:none">{salad}</div>', subject="your order"))
    assert got["HTML_HIDDEN_TEXT"][1] == ("100 words",)
    assert "AL_PHARMA" in got
    tiny = symbols(html(f'<span style="font-size:1px">{salad}</span>'))
    assert "HTML_HIDDEN_TEXT" in tiny
    white = symbols(html(f'<font color="#FFFFFF">{salad}</font> visible text'))
    assert "HTML_FONT_INVISIBLE" in white
    dark = symbols(html(f'<table bgcolor="#000000"><tr><td><font color="white">{salad}</font>'))
    assert "HTML_FONT_INVISIBLE" not in dark  # white on black is readable


@pytest.mark.parametrize("name, rule", [
    ("spam_pharmacy.eml", "AL_PHARMA_SUBJ"),
    ("spam_lottery.eml", "AL_LOTTERY"),
    ("spam_loan.eml", "AL_LOAN"),
])
def test_vocabulary_rules_on_the_spam_samples(name, rule):
    assert rule in symbols((MAIL / name).read_bytes())


def test_vocabulary_families():
    assert "AL_REPLICA" in symbols(html("<p>Swiss replica watches: Rolex replicas from $99</p>"))
    assert "AL_DATING" in symbols(html("<p>Lonely housewives in your area want to meet you</p>"))
    extortion = html("<p>I recorded you with your webcam. Send $900 to my bitcoin address "
                     "below, you have 48 hours.</p>")
    assert "AL_EXTORTION" in symbols(extortion)
    # one mention of a lottery in a newsletter is no lottery scam
    news = symbols(html("<p>The state lottery draw funded three new parks this year.</p>"))
    assert "AL_LOTTERY" not in news


def test_evidence_on_huge_hostile_html_is_bounded():
    body = ('<a href="http://a.example/">www.b.example</a><div style="display:none">x '
            * 40_000) + "<font color=white>" * 20_000
    raw = html(body)
    started = time.perf_counter()
    symbols(raw)
    assert time.perf_counter() - started < 2.0


def test_hidden_text_nested_in_hidden_text_is_set_apart_once():
    from aliasd.scanner.markup import html_to_text, invisible, split_invisible

    markup = ('<p>shown</p><div style="display:none">one <span style="font-size:0">two</span> '
              'three</div><p>also shown</p>')
    visible, hidden = split_invisible(markup, invisible(markup).styled)
    assert html_to_text(visible).split() == ["shown", "also", "shown"]
    assert html_to_text(hidden).split() == ["one", "two", "three"]

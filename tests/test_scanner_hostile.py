"""Hostile input cannot stall the scanner: every generated adversarial message (unclosed
tags, long runs of white space, digits, dots and '=', deep nesting, huge attributes and
headers, MIME bombs, base64 and quoted-printable junk) is scanned by the real bundled
scanner in bounded time, and the linear HTML pass reads HTML exactly as before."""

from __future__ import annotations

import html
import random
import re
import threading
import time

import pytest

from aliasd.config import load_settings
from aliasd.db import Database
from aliasd.scanner.bundled import BundledScanner
from aliasd.scanner.markup import MAX_TAG, html_to_text
from aliasd.scanner.message import MAX_PARSE_LINES, parse_input, parse_message
from aliasd.scanner.result import ScanRequest
from aliasd.scanner.spf import check_spf, zone_lookup
from tests.harness.hostile_mail import hostile_corpus, unclosed_style_lines, us_dollar_spaces

# The bar for the two messages that froze the milter; a generous bound for the
# rest (measured worst case here is well under a second; the machine is shared).
BAR_SECONDS = 2.0
GENEROUS_SECONDS = 6.0
CORPUS = hostile_corpus()


@pytest.fixture(scope="module")
def scanner(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{base}/scan.db"
    db = Database(url, timeout=30)
    db.upgrade()
    sc = BundledScanner(load_settings(environ={}, data_dir=str(base), database_url=url), db)
    yield sc
    sc.close()
    db.dispose()


def scan_seconds(scanner: BundledScanner, raw: bytes) -> tuple[float, object]:
    request = ScanRequest(message=raw, envelope_from="someone@example.org",
                          recipients=["shop.example@aliases.test"])
    t0 = time.perf_counter()
    result = scanner.scan(request)
    return time.perf_counter() - t0, result


def test_the_messages_that_froze_the_milter_scan_under_two_seconds(scanner):
    for raw in (unclosed_style_lines(66_000), us_dollar_spaces(50_000)):
        seconds, result = scan_seconds(scanner, raw)
        assert seconds < BAR_SECONDS, seconds
        assert result.symbols  # scanned, not skipped


@pytest.mark.parametrize("name", list(CORPUS))
def test_every_hostile_message_is_scanned_in_bounded_time(scanner, name):
    seconds, result = scan_seconds(scanner, CORPUS[name])
    assert seconds < GENEROUS_SECONDS, f"{name}: {seconds:.2f} s"
    assert result.score is not None and result.action is not None


def test_ordinary_scans_go_on_while_hostile_messages_are_scanned(scanner):
    """Scans of hostile mail in other threads leave ordinary mail its usual latency
    (Python's re held the GIL for minutes; the patterns used now never run long)."""
    ordinary = (
        b"From: Bob <bob@example.org>\r\nTo: a@b.example\r\nSubject: lunch\r\n"
        b"Message-ID: <1@example.org>\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\n"
        b"Shall we meet at noon?\r\n"
    )
    hostile = [CORPUS[n] for n in ("unclosed <style> x 66,000", "us + 1.9 MB of spaces",
                                   "'<' without '>' x 1.9 MB", "href= + 1.9 MB of spaces")]
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            for raw in hostile:
                scan_seconds(scanner, raw)

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        worst = max(scan_seconds(scanner, ordinary)[0] for _ in range(20))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert worst < 1.0, worst


# --- the HTML pass reads what the old regexes read -------------------------------------
_OLD_TAG = re.compile(r"<[^>]{0," + str(MAX_TAG) + "}>")
_OLD_BLOCK = re.compile(r"<(style|script)\b.*?</\1\s*>", re.I | re.S)


def old_html_to_text(markup: str) -> str:
    return html.unescape(_OLD_TAG.sub(" ", _OLD_BLOCK.sub(" ", markup)))


def test_html_text_matches_the_regex_reference_on_random_markup():
    pieces = ["<", ">", "style", "STYLE", "script", "</", " ", "\n", "x", "é", "_", "&#65;",
              "&amp;", "/", "Scr", "ipt", "<style>", "</style>", "</script >", "İ", "&#x41"]
    rng = random.Random(18)
    for _ in range(30_000):
        markup = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 20)))
        assert html_to_text(markup) == old_html_to_text(markup), markup


def test_a_tag_needs_its_closing_bracket_within_max_tag_characters():
    near = "a <" + "x" * MAX_TAG + "> b"
    far = "a <" + "x" * (MAX_TAG + 1) + "> b"
    assert html_to_text(near) == "a   b"
    assert html_to_text(far) == far


def test_style_and_script_blocks_are_dropped_and_unclosed_ones_lose_only_the_tag():
    markup = ("<p>Hello <STYLE type=x>p{color:red}</style\n>world<script>x()</SCRIPT>"
              "!<style>a{}")
    assert html_to_text(markup).split() == ["Hello", "world", "!", "a{}"]


def test_numeric_references_of_any_length_decode_as_html_does():
    assert html_to_text("&#0000000065;&#x00000000042;") == "AB"
    assert html_to_text("&#99999999999;") == "\ufffd"
    assert html_to_text("&#" + "9" * 10_000 + ";") == "\ufffd"  # html.unescape raises here
    assert html_to_text("&#" + "0" * 6_000 + "67") == "C"


# --- what the MIME parser reads ----------------------------------------------------------
def test_ordinary_large_messages_are_parsed_whole():
    attachment = b"QUJD" * 19 + b"\r\n"
    raw = (b"From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\"x\"\r\n\r\n"
           b"--x\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
           b"--x\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           + attachment * 25_000 + b"--x--\r\n")
    assert len(raw) > 1_900_000
    assert parse_input(raw) is raw
    pm = parse_message(raw)
    assert not pm.parse_truncated and pm.attachments == ["application/pdf"]


def test_mime_bombs_are_parsed_only_up_to_their_limits():
    nested = parse_message(CORPUS["nested multiparts x 2,000"])
    assert nested.parse_truncated and nested.defects > 0
    parts = parse_message(CORPUS["tiny MIME parts x 60,000"])
    assert parts.parse_truncated and parts.parts <= 201
    lines = b"From: a@b.example\r\n\r\n" + b"x\r\n" * (MAX_PARSE_LINES + 10)
    assert parse_input(lines).count(b"\n") == MAX_PARSE_LINES
    # a plain-text message full of "--" lines and the word boundary is not cut
    prose = b"From: a@b.example\r\n\r\n" + b"-- boundary --\r\n" * 5_000
    assert parse_input(prose) is prose


def test_aliasd_scan_of_the_hostile_messages_completes_fast(aliasd_cli, tmp_path):
    """The console command took over 60 s on the 66,000-<style> message."""
    for name, raw in (("styles.eml", unclosed_style_lines(66_000)),
                      ("spaces.eml", us_dollar_spaces(50_000))):
        path = tmp_path / name
        path.write_bytes(raw)
        t0 = time.perf_counter()
        proc = aliasd_cli("scan", str(path))
        seconds = time.perf_counter() - t0
        m = re.match(rf"Results for file: {re.escape(str(path))} \(([\d.]+) seconds\)", proc.stdout)
        assert m, proc.stdout
        assert float(m.group(1)) < BAR_SECONDS  # the scan itself, as the command reports it
        assert "Symbol: MIME_GOOD" in proc.stdout
        assert seconds < 15, seconds  # most of it is starting Python and importing aliasd


def test_spf_of_hostile_names_and_records_is_fast():
    """pyspf's domain check is quadratic in a label's length; over-long names and record
    terms never reach it."""
    long_label = "x." + "a" * 20_000 + "!"
    zone = {
        ("bad.example", "TXT"): [f"v=spf1 a:{long_label} -all"],
        ("ok.example", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
    }
    t0 = time.perf_counter()
    assert check_spf("192.0.2.1", f"a@{long_label}", "h.example").name == "R_SPF_NA"
    assert check_spf("192.0.2.1", "a@ok.example", long_label).name == "R_SPF_NA"
    assert check_spf("192.0.2.1", "a@bad.example", "h.example",
                     lookup=zone_lookup(zone)).name == "R_SPF_NA"  # the record is dropped
    assert check_spf("192.0.2.1", "a@ok.example", "h.example",
                     lookup=zone_lookup(zone)).name == "R_SPF_ALLOW"
    assert time.perf_counter() - t0 < BAR_SECONDS

"""Rule files in SpamAssassin's syntax: broken lines are skipped one by one with a
warning, patterns RE2 cannot run and plugin tests are skipped with a reason, metas on
skipped rules are disabled, patterns cannot backtrack, and SpamAssassin's own published
rules (Debian's spamassassin package, installed by scripts/install-deps --test) load."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import regex

from aliasd.config import load_settings
from aliasd.db import Database
from aliasd.scanner import filerules, rulefile
from aliasd.scanner.bundled import BundledScanner
from aliasd.scanner.message import decode_header_value, parse_message
from aliasd.scanner.relays import external_relays, iter_hops
from aliasd.scanner.result import ScanRequest
from aliasd.scanner.rulefile import HeaderView, RuleSet
from aliasd.scanner.sa_evals import Facts
from tests.harness.spamassassin import spamassassin_hits

SA_RULES = Path("/usr/share/spamassassin")
MAIL = Path(__file__).parent / "data" / "mail"

RULES = r"""
# a comment
body   __CHEAP      /\bcheap\b/i
body   __PILLS      /\b(?:pills|meds)\b/i
meta   CHEAP_PILLS  __CHEAP && __PILLS
score  CHEAP_PILLS  2.5
describe CHEAP_PILLS Cheap pills
header SUBJ_WIN     Subject =~ /\bwinner\b/i
score  SUBJ_WIN     0 1.0 1.5 2.0
header NO_LIST      List-Id !~ /./ [if-unset: ]
header HAS_PRIO     exists:X-Priority
header LIST_NICE    exists:List-Id
tflags LIST_NICE    nice
uri    URI_TOP      /\.top\b/
rawbody RAW_FONT    /<font\s/i
body   BROKEN_RE    /(unclosed/
body   LOOKAHEAD    /foo(?!bar)/
body   PLUGIN       eval:check_something()
meta   NEEDS_PLUGIN PLUGIN || __CHEAP
meta   BAD_META     (__CHEAP &&
score  CHEAP_PILLS  not-a-number
body
frobnicate this line
header BAD_HEADER   Subject /nope/
body   XFLAG        /a b c/x
"""


def view(raw: bytes) -> tuple[dict[str, str], HeaderView]:
    pm = parse_message(raw)
    return filerules.texts(pm), HeaderView(pm.msg, decode_header_value)


def test_broken_lines_are_skipped_with_a_warning_and_the_rest_works():
    rules = RuleSet()
    rules.load_text(RULES, "test.cf")
    rules.compile()
    report = rules.report
    warned = "\n".join(report.warnings)
    # each broken line is named by file and line number
    assert "test.cf:20:" in warned  # BAD_META
    assert "test.cf:21:" in warned  # score not a number
    assert "test.cf:22:" in warned  # 'body' alone
    assert "test.cf:24:" in warned  # header without =~
    assert "frobnicate" not in warned  # unknown directives are configuration: ignored
    skipped = {name: why for _, name, why in report.skipped}
    assert skipped["BROKEN_RE"].startswith("unsupported")
    assert skipped["PLUGIN"].startswith("eval")
    assert skipped["NEEDS_PLUGIN"].startswith("depends on")
    assert skipped["XFLAG"].startswith("unsupported")
    # a look-ahead RE2 cannot run loads: it runs on the bounded backtracking engine
    assert set(rules.rules) == {"__CHEAP", "__PILLS", "CHEAP_PILLS", "SUBJ_WIN", "NO_LIST",
                                "HAS_PRIO", "LIST_NICE", "URI_TOP", "RAW_FONT", "LOOKAHEAD"}
    assert rules.score_of("CHEAP_PILLS") == 2.5  # the broken later score line changed nothing
    assert rules.score_of("SUBJ_WIN") == 1.5  # of four scores, the one for Bayes without network
    assert rules.score_of("HAS_PRIO") == 1.0  # no score line: SpamAssassin's default
    assert rules.score_of("LIST_NICE") == -1.0  # ... and for a rule that marks ham
    assert "10 rules loaded" in report.summary() and "4 skipped" in report.summary()

    raw = (b"From: a@shop.example\nTo: b@example.org\nSubject: You are a WINNER\n"
           b"X-Priority: 1\nContent-Type: text/html\n\n"
           b"<html><font size=2>Cheap MEDS at <a href='http://pills.example.top/x'>here</a>"
           b"</font></html>\n")
    assert rules.match(*view(raw)) == ["CHEAP_PILLS", "HAS_PRIO", "NO_LIST", "RAW_FONT",
                                       "SUBJ_WIN", "URI_TOP", "__CHEAP", "__PILLS"]
    ham = (MAIL / "ham_family.eml").read_bytes()
    assert rules.match(*view(ham)) == ["NO_LIST"]


def test_an_unreadable_rule_file_is_a_warning(tmp_path):
    good = tmp_path / "good.cf"
    good.write_text("body GOOD /hello/\n")
    rules = RuleSet().load_paths([tmp_path / "missing.cf", good])
    assert "cannot read" in rules.report.warnings[0]
    assert set(rules.rules) == {"GOOD"}


def test_pathological_patterns_run_in_linear_time():
    rules = RuleSet()
    rules.load_text("body NESTED /(a+)+$/\nbody PAIRS /(x+x+)+y/\nbody ALT /(a|aa)+b/\n")
    rules.compile()
    raw = b"Subject: hi!\n\n" + b"a" * 30_000 + b"!\n" + b"x" * 15_000 + b"\n"
    started = time.perf_counter()
    hits = rules.match(*view(raw))
    assert time.perf_counter() - started < 1.0  # a backtracking engine takes years here
    assert hits == []


def test_the_startup_report_is_logged_and_rule_file_symbols_are_scored(tmp_path, caplog):
    extra = tmp_path / "local.cf"
    extra.write_text("body LOCAL_GARDEN /\\btomatoes\\b/i\nscore LOCAL_GARDEN 0.7\nbody BAD /(/\n"
                     "header MISSING_MID exists:Message-ID\nscore MISSING_MID 9\n")
    url = f"sqlite:///{tmp_path}/scan.db"
    db = Database(url, timeout=30)
    db.upgrade()
    with caplog.at_level(logging.INFO, logger="aliasd.scanner.filerules"):
        scanner = BundledScanner(load_settings(environ={}, data_dir=str(tmp_path), database_url=url,
                                               scanner_rules=[str(extra)]), db)
    assert any("scanner rules:" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    result = scanner.scan(ScanRequest(message=(MAIL / "ham_family.eml").read_bytes()))
    got = {s.name: s.score for s in result.symbols}
    assert got["LOCAL_GARDEN"] == round(0.7 * filerules.EXTRA_WEIGHT, 3)  # extra files weigh less
    # a rule file cannot take over a built-in rule's name
    assert "MISSING_MID" not in got
    scanner.close()
    db.dispose()


def test_spamassassins_published_rules_load_and_match():
    rules = RuleSet().load_paths([SA_RULES])
    report = rules.report
    assert report.files > 50 and len(rules.rules) > 1000
    assert not report.warnings, report.warnings[:5]
    reasons = {why.split(":")[0] for _, _, why in report.skipped}
    assert {"eval", "unsupported"} <= reasons
    raw = (b"From: \"Pharmacy\" <deals@meds.example>\nTo: you@example.org\n"
           b"Subject: Cheap Viagra and Cialis online\nMessage-ID: <1@meds.example>\n"
           b"Date: Mon, 10 Jun 2024 11:00:00 +0000\n\nBuy viagra online without prescription.\n"
           b"Click here to remove yourself from our list.\n")
    hits = rules.match(*view(raw))
    assert any(h.startswith(("DRUG", "SUBJECT_DRUG")) for h in hits), hits
    # sub-rules no scored rule reads are not run (they change no score)
    assert report.unused > 500 and "__HAS_UA" in rules.rules
    assert "__HAS_UA" not in rules.match(*view(b"User-Agent: Example\n" + raw))
    started = time.perf_counter()
    for _ in range(20):
        rules.match(*view((MAIL / "ham_github.eml").read_bytes()))
    assert (time.perf_counter() - started) / 20 < 0.1


def test_rule_matching_is_thread_safe():
    import concurrent.futures

    rules = RuleSet().load_paths([SA_RULES])
    raws = [p.read_bytes() for p in sorted(MAIL.glob("*.eml"))] * 10
    expected = [rules.match(*view(r)) for r in raws]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda r: rules.match(*view(r)), raws))
    assert got == expected


def test_spamassassin_content_mode_loads_no_header_rules_and_counts_them_in_full():
    rules, full = filerules.load((), str(SA_RULES), "content")
    own = set(filerules.load()[0].rules)
    kinds = {r.kind for r in rules.rules.values() if r.name not in own}
    assert "header" not in kinds and {"body", "uri", "rawbody", "meta"} <= kinds
    assert any(why.startswith("off") for _, _, why in rules.report.skipped)
    # SpamAssassin's content rules and aliasd's own count their whole score
    assert "AL_PHARMA" in full and "DRUG_ED_ONLINE" in full
    everything, full_all = filerules.load((), str(SA_RULES), "all")
    assert any(r.kind == "header" for r in everything.rules.values())
    assert "DRUG_ED_ONLINE" not in full_all  # with its header rules, SpamAssassin's weigh less
    off, _ = filerules.load((), str(SA_RULES), "off")
    assert set(off.rules) == own


def test_spamassassin_scored_mode_counts_its_scored_header_rules_at_a_share_and_not_the_unscored():
    scored, full = filerules.load((), str(SA_RULES), "scored")
    content, _ = filerules.load((), str(SA_RULES), "content")
    assert {"header", "mimeheader", "header_eval"} <= {r.kind for r in scored.rules.values()}
    # a header rule SpamAssassin scores (3.899 for Bayes without network tests): 0.4 of it
    assert scored.score_of("MSGID_OUTLOOK_INVALID") == round(3.899 * filerules.HEADER_WEIGHT, 3)
    # a meta over header rules Debian ships without a score: not counted (SpamAssassin: 1.0)
    assert "SPOOFED_FREEMAIL" in scored.rules and scored.score_of("SPOOFED_FREEMAIL") == 0
    # content rules keep their whole score, as in content mode
    assert scored.score_of("DRUG_ED_ONLINE") == content.score_of("DRUG_ED_ONLINE") > 0
    assert {"MSGID_OUTLOOK_INVALID", "DRUG_ED_ONLINE"} <= full
    forged = (b"Received: from pc (unknown [83.12.44.9]) by mx.example.net; Mon, 20 May 2024 03:14:05 +0000\n"
              b"From: Dr. Mark <mark.b@yahoo.com>\nTo: you@example.org\nSubject: urgent\n"
              b"Message-ID: <0000abcdef01$0a1b2c3d$4e5f6a7b@pc>\n"
              b"Date: Mon, 20 May 2024 03:14:05 +0000\n\nI am a banker.\n")
    got = {s.name: s.score for s in filerules.file_rule_symbols(scored, full, parse_message(forged),
                                                                 ScanRequest(message=forged), set())}
    assert got["MSGID_OUTLOOK_INVALID"] == round(3.899 * filerules.HEADER_WEIGHT, 3)
    assert all(score for score in got.values())  # what counts nothing is not shown


def test_a_missing_spamassassin_directory_leaves_aliasds_own_rules(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="aliasd.scanner.filerules"):
        rules, _ = filerules.load((), str(tmp_path / "nowhere"), "content")
    assert "no SpamAssassin rules at" in caplog.text
    assert set(rules.rules) == set(filerules.load()[0].rules)


def test_scanner_spamassassin_setting_is_checked(tmp_path):
    import pytest

    from aliasd.config import SettingsError

    with pytest.raises(SettingsError, match="scanner_spamassassin"):
        load_settings(environ={}, data_dir=str(tmp_path), scanner_spamassassin="everything")
    assert load_settings(environ={}, data_dir=str(tmp_path)).scanner_spamassassin == "content"


def test_naming_spamassassins_directory_in_scanner_rules_loads_it_once_with_header_rules():
    rules, _ = filerules.load((str(SA_RULES) + "/",), str(SA_RULES), "content")
    assert any(r.kind == "header" and r.name not in set(filerules.load()[0].rules)
               for r in rules.rules.values())
    assert rules.report.files == len(list(SA_RULES.glob("*.cf"))) + 1  # and aliasd's own file


def test_exists_on_a_pseudo_header_is_true_when_any_header_it_reads_is_there():
    """exists:ToCc is SpamAssassin's defined(get('ToCc')): true with a To or a Cc header.
    SpamAssassin's REPLYTO_WITHOUT_TO_CC reads it; as a literal header name it never
    existed, and the rule fired on every message with a Reply-To."""
    rules = RuleSet()
    rules.load_text("header __TOCC exists:ToCc\nheader __REPLY_TO exists:Reply-To\n"
                    "meta REPLY_NO_TOCC __REPLY_TO && !__TOCC\nscore REPLY_NO_TOCC 1\n"
                    "header HAS_MID exists:MESSAGEID\nscore HAS_MID 1\n", "pseudo.cf")
    rules.compile()

    def hits(head: bytes) -> set[str]:
        return set(rules.match(*view(head + b"Subject: hi\n\nhello\n")))

    reply = b"From: a@example.org\nReply-To: b@example.org\n"
    assert "REPLY_NO_TOCC" not in hits(reply + b"To: c@example.net\n")
    assert "REPLY_NO_TOCC" not in hits(reply + b"Cc: c@example.net\n")
    assert "REPLY_NO_TOCC" in hits(reply)
    assert "REPLY_NO_TOCC" not in hits(b"From: a@example.org\n")  # no Reply-To
    assert "HAS_MID" in hits(b"From: a@example.org\nResent-Message-ID: <1@example.org>\n")
    assert "HAS_MID" not in hits(b"From: a@example.org\n")


def test_body_and_uri_rules_read_each_paragraph_and_link_as_spamassassin_does():
    """SpamAssassin tries a body rule on each paragraph and a uri rule on each link, so
    ^ and $ anchor to those; its links include a mailto: for each address in the text,
    which keeps KHOP_UNSUB_EMAIL ("unsubscribe by mail, no unsubscribe link") off list
    mail whose footer names an -unsubscribe address."""
    rules = RuleSet()
    rules.load_text(r"""
body   DEAR_FRIEND   /^\s*Dear Friend\b/i
score  DEAR_FRIEND   1
uri    NUMERIC_HTTP  m{^https?://[\d.]+(?:[:/?\#]|$)}i
score  NUMERIC_HTTP  1
body   __UNSUB_EMAIL /\bunsubscribe\b[-a-z_0-9.+=]{0,60}\@[a-z0-9][-a-z_0-9.]{4,20}(?:[^a-z_0-9.-]|$)/i
uri    __UNSUB_LINK  /\bunsubscribe\b/i
meta   UNSUB_NO_LINK !__UNSUB_LINK && __UNSUB_EMAIL
score  UNSUB_NO_LINK 1
""", "lines.cf")
    rules.compile()

    def hits(body: str) -> set[str]:
        return set(rules.match(*view(b"From: a@example.org\nSubject: hi\n\n" + body.encode() + b"\n")))

    letter = "Hello there.\n\nDear Friend, I write to you about http://example.com/a and http://10.1.2.3/b"
    assert {"DEAR_FRIEND", "NUMERIC_HTTP"} <= hits(letter)  # the second paragraph, the second link
    assert not {"DEAR_FRIEND", "NUMERIC_HTTP"} & hits("My dear friend, see http://example.com/x")
    footer = "The list's news.\n\nTo leave, write to unsubscribe-news@lists.example.org"
    assert "UNSUB_NO_LINK" not in hits(footer)
    assert "UNSUB_NO_LINK" in hits("Send unsubscribe@localhost1 a note")  # no address a link could be


def hits_here_and_in_spamassassin(mode: str, watched: set[str], messages: list[bytes]) -> set[str]:
    """The ``watched`` rules that aliasd's reading of SpamAssassin's files (``mode``) hits
    on each message, asserted equal, message by message, to what Debian's SpamAssassin
    itself (``spamassassin -L -t``) reports; returns all that fired."""
    filerules.load.cache_clear()
    rules, _ = filerules.load((), str(SA_RULES), mode)
    filerules.load.cache_clear()
    assert watched <= set(rules.rules)
    fired: set[str] = set()
    for raw in messages:
        pm = parse_message(raw)
        chain = external_relays(None, None, None, lambda pm=pm: iter_hops(pm.msg.get_all("received") or []))
        headers = HeaderView(pm.msg, decode_header_value, "", lambda c=chain: c)
        ours = set(rules.match(filerules.texts(pm), headers, Facts(pm))) & watched
        assert ours == spamassassin_hits(raw) & watched, raw
        fired |= ours
    return fired


def test_rules_flagged_multiple_count_their_hits_for_metas_that_compare_counts():
    """tflags multiple: a meta reads how often the rule matched (up to maxhits), so
    "__E > 2" needs three matches and "__A - __B > 0" more of one than of the other;
    tflags nosubject: the rule reads the body without the Subject line."""
    rules = RuleSet()
    rules.load_text(r"""
body   __EARNED      /I earned \$\d+/
tflags __EARNED      multiple maxhits=4
meta   EARNED_OFTEN  __EARNED > 2
score  EARNED_OFTEN  1
meta   EARNED_CAPPED __EARNED > 4
score  EARNED_CAPPED 1
rawbody __HREF       /<a href=/i
tflags __HREF        multiple
rawbody __HREF_ONE   /<(?:a href|A HREF)=/
tflags __HREF_ONE    multiple
meta   MIXED_CASE    __HREF - __HREF_ONE > 0
score  MIXED_CASE    1
body   __TEXT        /\S/
tflags __TEXT        nosubject
meta   NO_TEXT       !__TEXT
score  NO_TEXT       1
""", "counts.cf")
    rules.compile()

    def hits(body: str, html: bool = False) -> set[str]:
        head = b"From: a@example.org\nSubject: money\n"
        if html:
            head += b"Content-Type: text/html\n"
        return set(rules.match(*view(head + b"\n" + body.encode() + b"\n")))

    assert "EARNED_OFTEN" not in hits("I earned $5. Then I earned $6.")
    assert "EARNED_OFTEN" in hits("I earned $5. Then I earned $6.\n\nLater I earned $7.")
    assert "EARNED_CAPPED" not in hits("I earned $1 " * 9)  # counted up to maxhits=4
    assert "MIXED_CASE" not in hits('<a href="x">x</a> <A HREF="y">y</A>', html=True)
    assert "MIXED_CASE" in hits('<a href="x">x</a> <a HREF="y">y</A>', html=True)
    assert "NO_TEXT" in hits("")  # the subject is not the body's text
    assert "NO_TEXT" not in hits("hello")


def test_counting_matches_stays_fast_on_a_pattern_that_backtracks_without_end():
    """A counted rule whose pattern would take a backtracking engine exponential time
    (optional parts that can each match or not) is counted by RE2, in linear time; a plain
    one by the stdlib's engine, with the same count."""
    rules = RuleSet()
    rules.load_text(r"""
body   __EVIL        /(?:a?){28}a{28}/
tflags __EVIL        multiple maxhits=5
meta   EVIL_TWICE    __EVIL > 1
score  EVIL_TWICE    1
body   __WORD        /\bcheap\b/i
tflags __WORD        multiple maxhits=50
meta   WORD_OFTEN    __WORD > 2
score  WORD_OFTEN    1
""", "hostile.cf")
    rules.compile()
    started = time.perf_counter()
    hits = set(rules.match(*view(b"Subject: x\n\n" + b"a" * 28 + b" b " + b"a" * 56 + b"\n")))
    assert time.perf_counter() - started < 2.0
    assert "EVIL_TWICE" in hits  # the 28 a's, then the 56 (greedy: one match)
    assert "WORD_OFTEN" in set(rules.match(*view(b"Subject: x\n\ncheap, Cheap and CHEAP\n")))
    assert "WORD_OFTEN" not in set(rules.match(*view(b"Subject: x\n\ncheap and cheaper\n")))


def test_counted_and_subjectless_spamassassin_rules_hit_as_in_spamassassin():
    """DAY_I_EARNED (three counted hits of __DAY_I_EARNED), MIXED_ES (more letters that
    look like e than e's, counted) and EMPTY_MESSAGE (no text once the Subject is left
    out) against what Debian's SpamAssassin itself reports on the same messages."""
    watched = {"DAY_I_EARNED", "MIXED_ES", "EMPTY_MESSAGE"}
    head = (b"From: Ann <ann@shop.example>\nTo: bob@example.org\nSubject: news\n"
            b"Message-ID: <1@shop.example>\nDate: Mon, 7 Dec 2026 10:00:00 +0000\n"
            b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
            b"Content-Transfer-Encoding: 8bit\n\n")
    earned = ["Yesterday was a good day, I earned $500 at home.", "Another day, I made $700 there.",
              "That day I got $900 again."]
    messages = [
        head + "\n\n".join(earned).encode() + b"\n",
        head + "\n\n".join(earned[:2]).encode() + b"\n",
        head + ("the " * 25 + "d\u0435al " * 15).encode() + b"\n",  # Cyrillic e
        head + ("the " * 25 + "deal " * 15).encode() + b"\n",
        head,
        head + b"hello\n",
    ]
    assert hits_here_and_in_spamassassin("content", watched, messages) == watched


def test_line_breaks_inside_a_base64_text_part_are_read_as_spamassassin_reads_them():
    """SpamAssassin turns CRLF into LF in a text part it decodes from base64 or
    quoted-printable: an HTML part of 1,034 bytes with 26 CRLF is 1,008 long for
    HTML_SHORT_LINK_IMG_1 (up to 1,024), and a rawbody rule sees $ at each line's end."""
    import base64

    lines = [b'<a href="http://shop.example/"><img src="http://shop.example/a.gif"></a>'] + [b"x" * 36] * 24
    lines.append(b"x" * (1034 - 2 * 26 - sum(map(len, lines))))
    html = b"".join(line + b"\r\n" for line in lines)
    assert len(html) == 1034
    raw = (b"From: Ann <ann@shop.example>\nTo: bob@example.org\nSubject: news\n"
           b"Message-ID: <1@shop.example>\nDate: Mon, 7 Dec 2026 10:00:00 +0000\nMIME-Version: 1.0\n"
           b"Content-Type: text/html\nContent-Transfer-Encoding: base64\n\n"
           + base64.encodebytes(html))
    watched = {"HTML_SHORT_LINK_IMG_1", "HTML_SHORT_LINK_IMG_2"}
    assert hits_here_and_in_spamassassin("content", watched, [raw]) == {"HTML_SHORT_LINK_IMG_1"}
    own = RuleSet()
    own.load_text("rawbody LINE_END /x$/m\nscore LINE_END 1\n", "lines.cf")
    own.compile()
    assert "LINE_END" in own.match(*view(raw))


def test_text_that_lies_about_being_ascii_or_writes_unicode_escapes_is_read_as_in_spamassassin():
    """MIMEEval's check_for_ascii_text_illegal (8-bit bytes in text/plain said or taken
    to be US-ASCII) and check_abundant_unicode_ratio (HTML-style &#xHHHH; escapes in plain
    text) against what Debian's SpamAssassin reports on the same messages."""
    watched = {"PP_MIME_FAKE_ASCII_TEXT", "PP_TOO_MUCH_UNICODE02", "PP_TOO_MUCH_UNICODE05"}
    head = (b"From: Ann <ann@shop.example>\nTo: bob@example.org\nSubject: news\n"
            b"Message-ID: <1@shop.example>\nDate: Mon, 7 Dec 2026 10:00:00 +0000\n")
    typed = head + b"MIME-Version: 1.0\nContent-Type: text/plain; charset=%s\nContent-Transfer-Encoding: %s\n\n"
    messages = [
        head + b"\nCaf\xe9 au lait, na\xefve.\n",
        typed % (b"iso-8859-1", b"8bit") + b"Caf\xe9 au lait.\n",
        typed % (b"us-ascii", b"8bit") + b"Caf\xe9 au lait.\n",
        typed % (b"us-ascii", b"quoted-printable") + b"Caf=E9 au lait.\n",
        head + b"\nplain ascii only\n",
        head + b"\n" + b"&#x0412;&#x0410;&#x0416;&#x041D;&#x041E; " * 5 + b"hello there friend\n",
        head + b"\nsee &#x0412; once in a longer text " + b"word " * 60 + b"\n",
    ]
    assert hits_here_and_in_spamassassin("content", watched, messages) == watched


def test_recipient_and_relay_header_tests_hit_as_in_spamassassin():
    """HeaderEval's similar_recipients, sorted_recipients and check_for_missing_to_header
    and RelayEval's helo_ip_mismatch and check_for_no_rdns_dotcom_helo (``scored`` mode)
    against what Debian's SpamAssassin reports on the same messages."""
    watched = {"SUSPICIOUS_RECIPS", "SORTED_RECIPS", "MISSING_HEADERS", "RCVD_HELO_IP_MISMATCH",
               "NO_RDNS_DOTCOM_HELO"}
    head = b"From: Ann <ann@shop.example>\nSubject: news\nMessage-ID: <1@shop.example>\nDate: Mon, 7 Dec 2026 10:00:00 +0000\n"
    to = b"To: bob@example.org, Carol <carol@example.net>\nCc: dan@example.com\n"
    received = b"Received: from %s (%s) by mx.example.net (Postfix) with SMTP id 1;\n\tMon, 7 Dec 2026 10:00:01 +0000\n"
    messages = [
        head + b"To: aaron@mail1.example, aabid@mail2.example, aaden@mail3.example, aadil@mail4.example, "
               b"aage@mail5.example\n",
        head + b"To: zed@a.example, bob@b.example, carl@c.example, dave@d.example, erin@e.example, "
               b"fay@f.example, al@g.example\n",
        head + b"To: al@a.example, bob@b.example, carl@c.example, dave@d.example, erin@e.example, "
               b"fay@f.example, gus@g.example\n",
        head + to,
        head,
        received % (b"61.174.163.26", b"unknown [218.19.142.229]") + head + to,
        received % (b"218.19.142.7", b"unknown [218.19.142.229]") + head + to,
        received % (b"mx02.hotmail.com", b"unknown [148.223.251.99]") + head + to,
        received % (b"mx02.hotmail.com", b"www.sucasita.com.mx [148.223.251.99]") + head + to,
    ]
    assert hits_here_and_in_spamassassin("scored", watched, [m + b"\nhello\n" for m in messages]) == watched


def test_senders_at_yahoo_or_hotmail_that_neither_handed_over_are_found_as_in_spamassassin():
    """HeaderEval's forged Yahoo!/Hotmail tests (``scored``): From at yahoo.com or
    hotmail.com while no Received header shows their servers handing it over, against
    what Debian's SpamAssassin reports."""
    watched = {"FORGED_YAHOO_RCVD", "FORGED_HOTMAIL_RCVD2"}
    rest = b"To: bob@example.org\nSubject: news\nMessage-ID: <1@shop.example>\nDate: Mon, 7 Dec 2026 10:00:00 +0000\n"
    received = b"Received: from %s (%s) by mx.example.net (Postfix) with SMTP id 1;\n\tMon, 7 Dec 2026 10:00:01 +0000\n"
    spammer = received % (b"pc-83-12", b"unknown [83.12.44.9]")
    messages = [
        spammer + b"From: Ann <ann@yahoo.com>\n" + rest,
        received % (b"web12.mail.yahoo.com", b"web12.mail.yahoo.com [66.218.93.5]")
        + b"Received: from [83.12.44.9] by web12.mail.yahoo.com via HTTP; Mon, 7 Dec 2026 09:59:00 PST\n"
        + b"From: Ann <ann@yahoo.com>\n" + rest,
        spammer + b"From: Ann <ann@hotmail.com>\n" + rest,
        received % (b"hotmail.com", b"f135.law8.hotmail.com [216.33.241.135]")
        + b"X-Originating-IP: [83.12.44.9]\nFrom: Ann <ann@hotmail.com>\n" + rest,
        spammer + b"From: Ann <ann@example.org>\n" + rest,
    ]
    assert hits_here_and_in_spamassassin("scored", watched, [m + b"\nhello\n" for m in messages]) == watched


def test_spamassassins_own_rules_hit_here_as_in_spamassassin():
    """With SpamAssassin's rule files (``scored``: header rules too), the rules that hang
    on how a message is read hit as SpamAssassin itself (Debian's, local tests only)
    reports them: REPLYTO_WITHOUT_TO_CC (exists:ToCc is "To or Cc"), DEAR_FRIEND (^ at
    each paragraph), KHOP_UNSUB_EMAIL (addresses in the text are links too)."""
    watched = {"REPLYTO_WITHOUT_TO_CC", "DEAR_FRIEND", "KHOP_UNSUB_EMAIL"}
    head = (b"From: Ann <ann@shop.example>\nSubject: news\nMessage-ID: <1@shop.example>\n"
            b"Date: Mon, 7 Dec 2026 10:00:00 +0000\n")
    messages = [
        head + b"To: bob@example.org\nReply-To: ann@shop.example\n\nHello Bob, see you.\n",
        head + b"Reply-To: ann@shop.example\n\nHello, see you.\n",
        head + b"To: bob@example.org\n\nA short note first.\n\nDear Friend, I write about a deal.\n",
        head + b"To: bob@example.org\n\nThe list's news.\n\nTo leave, write to unsubscribe-news@lists.example.org\n",
    ]
    # each hits on one message, not another
    assert hits_here_and_in_spamassassin("scored", watched, messages) == {"REPLYTO_WITHOUT_TO_CC", "DEAR_FRIEND"}


def test_text_rules_re2_cannot_run_hit_where_their_look_arounds_allow():
    """A body rule with a look-ahead or look-behind is tried wherever its relaxed form
    matches, not only where that matches first: the plain word excluded at the start of
    the text does not hide the disguised one after it."""
    rules = RuleSet()
    rules.load_text(r"""
body   DISGUISED   /(?!click here)c\W?l\W?i\W?c\W?k\W?h\W?e\W?r\W?e/i
body   NOT_AFTER   /(?<!breast )cancer cure/i
body   ECHO        /\b(\w{4,}) \1\b/
rawbody MIXED_TAG  /<(?!FONT|font)[Ff][Oo][Nn][Tt]\s/
uri    ESCAPED     /^https?:\/\/[^\/]*(?<=%)[0-9a-f]{2}/i
""" + "body   HUGE        /(?!plain)(?:" + "|".join(f"word{i}" for i in range(600)) + ")/\n", "lookaround.cf")
    rules.compile()
    # one whose first pass would be too long to run on every message stays skipped
    assert [(name, "too costly" in why) for _, name, why in rules.report.skipped] == [("HUGE", True)]

    def hits(text: str) -> set[str]:
        return set(rules.match(*view(b"Subject: x\nContent-Type: text/html\n\n" + text.encode() + b"\n")))

    assert "DISGUISED" not in hits("<p>click here, then CLICK HERE</p>")
    assert "DISGUISED" in hits("<p>click here, or c-l-i-c-k h.e.r.e</p>")
    assert "NOT_AFTER" not in hits("<p>a breast cancer cure</p>")
    assert "NOT_AFTER" in hits("<p>a breast cancer cure and a cancer cure</p>")
    assert "ECHO" in hits("<p>now free free offer</p>") and "ECHO" not in hits("<p>free offer</p>")
    assert "MIXED_TAG" in hits("<font size=2>a</font><FoNt size=3>b</FoNt>")
    assert "MIXED_TAG" not in hits("<font size=2>a</font><FONT size=3>b</FONT>")


def test_text_rules_that_backtrack_without_end_cost_a_bounded_time():
    """However many backtracking text rules a hostile message wakes, and however badly
    each backtracks there, the message's backtracking stops within its budget and those
    rules do not hit."""
    rules = RuleSet()
    rules.load_text("".join(f"body SLOW_{i} /(x+x+)+\\1y{i}/\n" for i in range(40)), "slow.cf")
    rules.compile()
    assert len(rules.rules) == 40
    body = "".join(f"{'x' * 40}!y{i}\n\n" for i in range(40))
    started = time.perf_counter()
    hits = rules.match(*view(b"Subject: x\n\n" + body.encode()))
    assert time.perf_counter() - started < 1.0  # one of them alone runs for minutes
    assert hits == []


def test_a_busy_machine_does_not_change_which_text_rules_hit(monkeypatch):
    """The backtracking budget counts the scanning thread's own work only: while it waits
    (other threads scanning, the garbage collector, other processes) the budget does not
    run down, so a message gets the same hits however busy the machine is."""
    rules = RuleSet()
    rules.load_text("".join(f"body   AHEAD_{i}  /(?!plain)offer{i}\\b/\n" for i in range(6)), "ahead.cf")
    rules.compile()
    message = b"Subject: x\n\n" + b" ".join(b"offer%d" % i for i in range(6)) + b"\n"
    quiet = rules.match(*view(message))
    assert quiet == [f"AHEAD_{i}" for i in range(6)]

    confirmed = rulefile._confirmed

    def after_a_wait(*args):
        time.sleep(0.03)  # another thread's turn: the clock runs, this thread does not
        return confirmed(*args)

    monkeypatch.setattr(rulefile, "_confirmed", after_a_wait)
    assert rules.match(*view(message)) == quiet


def test_a_rule_stopped_by_the_clock_before_using_its_cpu_time_is_tried_again():
    """The engine stops a call by the clock; when the system ran other processes meanwhile,
    the call is made again with the CPU time it has left, and the rule hits as on a quiet
    machine. A call that does use up its CPU time stays stopped."""

    class DescheduledOnce:
        calls = 0

        def search(self, text, pos=0, timeout=None):
            self.calls += 1
            if self.calls == 1:
                raise TimeoutError  # the clock ran out while another process had the core
            return regex.compile("needle").search(text, pos, timeout=timeout)

    pattern = DescheduledOnce()
    assert rulefile.bounded_search(pattern, "a needle") and pattern.calls == 2

    class Catastrophic:
        def search(self, text, pos=0, timeout=None):
            started = time.thread_time()
            while time.thread_time() - started < timeout:
                pass  # backtracking: CPU time spent
            raise TimeoutError

    started = time.perf_counter()
    assert not rulefile.bounded_search(Catastrophic(), "x" * 40)
    assert time.perf_counter() - started < 1.0


def test_spamassassins_drug_and_body_part_rules_hit_as_in_spamassassin():
    """SpamAssassin's rules with look-arounds RE2 cannot run (its erectile-drug tests,
    BODY_ENHANCEMENT2's "breast" but not "breast cancer", mixed-case font tags) hit
    here as Debian's SpamAssassin itself reports them."""
    watched = {"DRUGS_ERECTILE", "DRUGS_ERECTILE_OBFU", "BODY_ENHANCEMENT2", "MIXED_FONT_CASE"}
    head = (b"From: Ann <ann@shop.example>\nTo: bob@example.org\nSubject: news\n"
            b"Message-ID: <1@shop.example>\nDate: Mon, 7 Dec 2026 10:00:00 +0000\n"
            b"MIME-Version: 1.0\n")
    plain = head + b"Content-Type: text/plain; charset=us-ascii\n\n"
    html = head + b"Content-Type: text/html; charset=us-ascii\n\n"
    messages = [
        plain + b"Generic C1@lis and V-i-a-g-r-a shipped overnight.\n",
        plain + b"Our doctor said Cialis is fine for you.\n",
        plain + b"The specialist called about the appointment.\n",
        plain + b"Breast size increase in 30 days, guaranteed.\n",
        plain + b"Breast cancer awareness: the walk grows in size every year.\n",
        html + b"<html><body><FoNt size=3>Hello</FoNt> there, see the news.</body></html>\n",
        html + b"<html><body><font size=3>Hello</font> there, see the news.</body></html>\n",
    ]
    assert hits_here_and_in_spamassassin("content", watched, messages) == watched


def test_a_link_to_an_ip_address_counts_once_with_spamassassins_rules_loaded(tmp_path):
    """aliasd's HTTP_TO_IP and SpamAssassin's NORMAL_HTTP_TO_IP state the same fact:
    with SpamAssassin's rules loaded only theirs counts, without them aliasd's."""
    url = f"sqlite:///{tmp_path}/scan.db"
    db = Database(url, timeout=30)
    db.upgrade()
    raw = (MAIL / "spam_pharmacy.eml").read_bytes()
    got = {}
    for mode in ("off", "content"):
        scanner = BundledScanner(load_settings(environ={}, data_dir=str(tmp_path), database_url=url,
                                               scanner_spamassassin=mode), db)
        got[mode] = {s.name for s in scanner.scan(ScanRequest(message=raw)).symbols}
        scanner.close()
    assert "HTTP_TO_IP" in got["off"] and "NORMAL_HTTP_TO_IP" not in got["off"]
    assert "NORMAL_HTTP_TO_IP" in got["content"] and "HTTP_TO_IP" not in got["content"]

"""SpamAssassin's header rules that read more than a header: its FreeMail tests over the
freemail domains its files list, From against the envelope sender, forged Outlook
Message-IDs, the relay chain (``X-Spam-Relays-External``, as its dynamic-rDNS and HELO
rules read it), patterns RE2 cannot run on a bounded backtracking engine, and network
tests that never run here reading as "no hit" in metas, as in SpamAssassin without them."""

from __future__ import annotations

import datetime as dt
import email.utils
import time

from aliasd.scanner import filerules
from aliasd.scanner.message import decode_header_value, parse_message
from aliasd.scanner.relays import external_relays, read_hops, relay_counts
from aliasd.scanner.rulefile import HeaderView, RuleSet
from aliasd.scanner.sa_evals import Facts

RULES = r"""
freemail_domains gmail.com hotmail.com yahoo.*
freemail_domains bad_domain!
header FREEMAIL_FROM      eval:check_freemail_from()
header FREEMAIL_ENV_DIGIT eval:check_freemail_header('EnvelopeFrom', '\d@')
header __fm_replyto       eval:check_freemail_replyto('replyto')
meta   FREEMAIL_REPLYTO   __fm_replyto
header FROM_DIFF_DOMAINS  eval:check_equal_from_domains()
header MSGID_OUTLOOK_INVALID eval:check_outlook_message_id()
header ALL_TRUSTED        eval:check_all_trusted()
header __RDNS_NONE        X-Spam-Relays-External =~ /^[^\]]+ rdns= /
header __RDNS_DYN         X-Spam-Relays-External =~ /^[^\]]+ rdns=(?![^\s\]]+[-.]static[-.])\S*\d+[^\d\s]\d+[^\d\s]\d+[^\d\s]\d+\S*\.\S+\.\S/i
meta   RDNS_DYNAMIC       __RDNS_DYN
header __DNSWL            eval:check_rbl('dnswl-firsttrusted', 'list.dnswl.org.')
tflags __DNSWL            nice net
meta   NO_NAME_NOT_LISTED __RDNS_NONE && !__DNSWL
header __ECHO             Subject =~ /^(\w+) \1$/
meta   SUBJECT_ECHO       __ECHO
header SLOW               Subject =~ /^(a|aa)+(?=b)$/
header __MULTIPART        Content-Type =~ /multipart\/\w+/i
meta   __TEXT_PART        0
mimeheader __TEXT_PART    Content-Type =~ /text\/\w+/i
meta   MIME_NO_TEXT       __MULTIPART && !__TEXT_PART
mimeheader EXE_ATTACHED   Content-Type =~ /name="?[^"]+\.exe"?/i
"""


def rules() -> RuleSet:
    rs = RuleSet()
    rs.load_text(RULES, "test.cf")
    return rs.compile()


def hits(raw: bytes, envelope_from: str = "", client: tuple[str, str] | None = None) -> list[str]:
    pm = parse_message(raw)
    hops = read_hops(pm.msg.get_all("received") or [])
    addr, name = client or (None, None)
    relays = external_relays(addr, name, "", lambda: hops)
    headers = HeaderView(pm.msg, decode_header_value, envelope_from, lambda: relays)
    return rules().match(filerules.texts(pm), headers, Facts(pm), lambda: relay_counts(addr, lambda: hops))


def mail(headers: str, body: str = "hello\n") -> bytes:
    return (headers.strip() + "\nTo: you@example.net\nDate: Mon, 20 May 2024 03:14:05 +0000\n\n" + body).encode()


def test_freemail_domains_are_read_from_the_rule_files_with_their_wildcards():
    rs = rules()
    assert "someone@gmail.com" in rs.freemail and "x@yahoo.co.uk" not in rs.freemail
    assert "x@yahoo.de" in rs.freemail  # "yahoo.*": any one label
    assert "x@shop.example" not in rs.freemail
    assert any("bad_domain!" in w for w in rs.report.warnings)


def test_freemail_sender_and_an_envelope_ending_in_a_digit():
    assert "FREEMAIL_FROM" in hits(mail("From: Ann <ann@gmail.com>"))
    assert "FREEMAIL_FROM" not in hits(mail("From: Ann <ann@shop.example>"))
    # the envelope sender counts as a sender too
    assert "FREEMAIL_FROM" in hits(mail("From: Ann <ann@shop.example>"), "bob@hotmail.com")
    assert "FREEMAIL_ENV_DIGIT" in hits(mail("From: a@shop.example"), "winner2002@hotmail.com")
    assert "FREEMAIL_ENV_DIGIT" not in hits(mail("From: a@shop.example"), "winner@hotmail.com")


def test_a_reply_to_another_freemail_address_is_a_scammers_drop_box():
    scam = mail("From: Dr. Mark <mark.b@yahoo.de>\nReply-To: markb.private@hotmail.com")
    assert "FREEMAIL_REPLYTO" in hits(scam)
    same = mail("From: Ann <ann@gmail.com>\nReply-To: ann@gmail.com")
    assert "FREEMAIL_REPLYTO" not in hits(same)
    # ... or a reply asked for in the body, to a freemail address other than Reply-To's
    body = mail("From: a@shop.example\nReply-To: claims@gmail.com", "Write to agent.b@hotmail.com now\n")
    assert "FREEMAIL_REPLYTO" in hits(body)
    # a quoted address ("x@y wrote:") is not a request to write there
    quoted = mail("From: a@shop.example\nReply-To: ann@gmail.com", "ann.b@hotmail.com wrote: hi\n")
    assert "FREEMAIL_REPLYTO" not in hits(quoted)
    # bulk and list senders are not judged
    assert "FREEMAIL_REPLYTO" not in hits(scam, "list-bounces@lists.example")


def test_body_addresses_are_those_a_reading_of_the_whole_text_finds():
    """The addresses a reply may be asked to are read only around each "@": the same
    ones, in the same order, as the patterns run over the whole body find."""
    import random
    from types import SimpleNamespace

    from aliasd.scanner import sa_header_evals as he

    def whole_text(text: str) -> list[str]:
        text = he._URL_WITH_AT.sub(" ", text)
        text = he._QUOTED_EMAIL.sub(" ", text)
        return list(dict.fromkeys(m.group(1).lower() for m in he._EMAIL.finditer(text)))[:40]

    def stretches(text: str) -> list[str]:
        return he._body_emails(SimpleNamespace(text=text, html_raw=""))

    pieces = ["write to agent.b@hotmail.com now", "ann@gmail.com wrote:", "m@" + "d" * 60 + "." + "e" * 60 + ".com", "<bob@yahoo.de>",
              "mailto:cash@gmail.com", "http://x.example/a@b.example/c", "https://t.example/?u=me%40gmail.com",
              "x" * 400, " " * 30, "\n\n", "claims@", "@gmail.com", "a.b@c", "<https://e.example/" + "y" * 240 + "@z.org" + "w" * 200 + ">",
              "fax: 1", "tel:", "e-mail:", "j@example.com fax:", "k@example.com  said: hi", "lorem ipsum " * 40]
    rng = random.Random(7)
    for _ in range(400):
        text = "".join(rng.choice(pieces) + rng.choice(["", " ", "\n"]) for _ in range(rng.randint(1, 40)))
        assert stretches(text) == whole_text(text), text


def test_from_and_envelope_sender_in_different_domains():
    news = mail("From: Shop <news@shop.example>")
    assert "FROM_DIFF_DOMAINS" not in hits(news, "bounce-17@mail.shop.example")  # same last two labels
    assert "FROM_DIFF_DOMAINS" in hits(news, "x@spammer.example")
    assert "FROM_DIFF_DOMAINS" not in hits(news)  # no envelope sender: not judged


def outlook_id(when: dt.datetime) -> str:
    token = int(when.timestamp() * 0.0023283064365387 + 27111902.8329849)
    return f"<0000{token:08x}$0a1b2c3d$4e5f6a7b@pc>"


def test_an_outlook_express_message_id_whose_time_does_not_match_the_date_is_forged():
    sent = dt.datetime(2024, 5, 20, 3, 14, 5, tzinfo=dt.UTC)
    honest = mail(f"From: a@shop.example\nMessage-ID: {outlook_id(sent)}")
    assert "MSGID_OUTLOOK_INVALID" not in hits(honest)
    forged = mail(f"From: a@shop.example\nMessage-ID: {outlook_id(sent - dt.timedelta(days=400))}")
    assert "MSGID_OUTLOOK_INVALID" in hits(forged)
    # a Received time that matches clears it, as SpamAssassin's test does
    stamp = email.utils.format_datetime(sent - dt.timedelta(days=400))
    relayed = forged.replace(b"From:", f"Received: from pc (pc [10.0.0.2]) by mx; {stamp}\nFrom:".encode(), 1)
    assert "MSGID_OUTLOOK_INVALID" not in hits(relayed)


def test_relay_rules_read_the_chain_and_lookaheads_run_on_a_bounded_engine():
    dynamic = mail("Received: from pc (dsl-84-1-2-3.dyn.isp.example [84.1.2.3]) by mx.example.net\nFrom: a@x.example")
    static = dynamic.replace(b"dsl-84-1-2-3.dyn", b"mail-84-1-2-3.static")
    unnamed = dynamic.replace(b"dsl-84-1-2-3.dyn.isp.example", b"unknown")
    assert "RDNS_DYNAMIC" in hits(dynamic)
    assert "RDNS_DYNAMIC" not in hits(static)  # the negative look-ahead
    assert "RDNS_DYNAMIC" not in hits(unnamed) and "NO_NAME_NOT_LISTED" in hits(unnamed)
    # the milter's connection is the first relay
    assert "NO_NAME_NOT_LISTED" in hits(static, client=("84.1.2.3", "unknown"))
    assert "RDNS_DYNAMIC" in hits(unnamed, client=("84.1.2.3", "cpe-84-1-2-3.dhcp.isp.example"))
    # a back-reference
    assert "SUBJECT_ECHO" in hits(mail("From: a@x.example\nSubject: hello hello"))
    assert "SUBJECT_ECHO" not in hits(mail("From: a@x.example\nSubject: hello world"))


def test_a_backtracking_pattern_cannot_hold_a_message_up():
    raw = mail("From: a@x.example\nSubject: " + "a" * 3000 + "c")
    started = time.perf_counter()
    assert "SLOW" not in hits(raw)
    assert time.perf_counter() - started < 1.0


def test_network_tests_never_run_and_read_as_no_hit_in_metas():
    rs = rules()
    assert "NO_NAME_NOT_LISTED" in rs.rules  # not disabled for its network sub-rule
    assert "__DNSWL" not in rs.rules  # which itself is skipped


def test_all_trusted_when_every_relay_is_on_a_private_address():
    internal = mail("Received: from pc (pc [10.0.0.2]) by mx.corp.example\nFrom: a@corp.example")
    assert "ALL_TRUSTED" in hits(internal)
    assert "ALL_TRUSTED" not in hits(internal, client=("84.1.2.3", "mail.isp.example"))
    outside = mail("Received: from pc (mail.isp.example [84.1.2.3]) by mx.corp.example\nFrom: a@corp.example")
    assert "ALL_TRUSTED" not in hits(outside)
    assert "ALL_TRUSTED" not in hits(mail("From: a@corp.example"))  # no relay at all


def multipart(*parts: str) -> bytes:
    body = "".join(f"--b\n{p}\n\ncontent\n" for p in parts) + "--b--\n"
    return mail('From: a@x.example\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="b"', body)


def test_mimeheader_rules_read_the_headers_of_every_mime_part():
    with_text = multipart("Content-Type: text/plain", "Content-Type: application/octet-stream")
    without = multipart("Content-Type: image/gif", 'Content-Type: application/x-msdownload; name="a.exe"')
    # a later mimeheader definition replaces the "meta X 0" fallback SpamAssassin's files give
    assert "MIME_NO_TEXT" not in hits(with_text)
    assert {"MIME_NO_TEXT", "EXE_ATTACHED"} <= set(hits(without))
    assert "EXE_ATTACHED" not in hits(with_text)

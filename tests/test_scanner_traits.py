"""The spam-trait rules added for recall (ADVANCE_FEE, FROM_NAME_CAPS, HTML_IN_PLAIN,
FREEMAIL_REPLYTO_NEQ_FROM, MIME_BASE64_TEXT, BODY_SHOUTING, HTML_IMAGE_ONLY,
REMOVE_BY_MAILTO, STOCK_PITCH, FORGED_MUA_OUTLOOK): each fires on a message with the
trait and stays silent on the realistic ham in tests/data/mail. Pure: no database."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest

from aliasd.scanner.message import parse_message
from aliasd.scanner.result import ScanRequest
from aliasd.scanner.rules import RuleContext, content_rules, header_rules

MAIL = Path(__file__).parent / "data" / "mail"
NOW = dt.datetime(2024, 6, 10, 12, 0, tzinfo=dt.UTC)
TRAITS = {
    "ADVANCE_FEE", "FROM_NAME_CAPS", "HTML_IN_PLAIN", "FREEMAIL_REPLYTO_NEQ_FROM",
    "MIME_BASE64_TEXT", "BODY_SHOUTING", "HTML_IMAGE_ONLY", "REMOVE_BY_MAILTO", "STOCK_PITCH",
    "FORGED_MUA_OUTLOOK",
}


def symbols(raw: bytes) -> dict[str, tuple]:
    ctx = RuleContext(request=ScanRequest(message=raw), pm=parse_message(raw), now=NOW)
    return {s.name: (s.score, s.options) for s in [*header_rules(ctx), *content_rules(ctx)]}


def msg(headers: str, body: str | bytes) -> bytes:
    head = ("Message-ID: <1@x.example>\nDate: Mon, 10 Jun 2024 11:00:00 +0000\n"
            "To: you@example.org\nSubject: hello\n" + headers)
    body_b = body if isinstance(body, bytes) else body.encode()
    return head.encode() + b"\n" + body_b


@pytest.mark.parametrize("name", sorted(p.name for p in MAIL.glob("ham_*.eml")))
def test_ham_gets_none_of_the_trait_rules(name):
    assert not TRAITS & set(symbols((MAIL / name).read_bytes()))


def test_advance_fee_needs_two_distinct_phrases():
    one = msg("From: a@b.example\n", "I am the next of kin.\n")
    assert "ADVANCE_FEE" not in symbols(one)
    two = msg("From: a@b.example\n",
              "I am the next of kin of the late general. Transfer the funds of US$ 25 million.\n")
    score, options = symbols(two)["ADVANCE_FEE"]
    assert score == 3.0 and "next of kin" in options


def test_from_name_caps_and_shouting_body():
    got = symbols(msg('From: "DR SAMUEL EBOKA" <s@x.example>\n', "HELLO FRIEND " * 40))
    assert "FROM_NAME_CAPS" in got and "BODY_SHOUTING" in got
    quiet = symbols(msg('From: "Dr Samuel Eboka" <s@x.example>\n', "Hello friend " * 40))
    assert "FROM_NAME_CAPS" not in quiet and "BODY_SHOUTING" not in quiet


def test_shouting_is_counted_in_every_alphabet():
    # capitals outside ASCII are capitals, and letters outside ASCII are letters
    assert "BODY_SHOUTING" in symbols(msg("From: a@b.example\n", "ÜBERWEISUNG SOFORT ÄNDERN " * 20))
    assert "BODY_SHOUTING" in symbols(msg("From: a@b.example\n", "ВНИМАНИЕ ВЫИГРЫШ " * 20))
    assert "BODY_SHOUTING" not in symbols(msg("From: a@b.example\n", "Внимание выигрыш " * 20))
    # mostly capitals in ASCII, but more small letters outside it: not shouting
    mixed = "OK " * 150 + "привет мир здравствуйте " * 20
    assert "BODY_SHOUTING" not in symbols(msg("From: a@b.example\n", mixed))


def test_html_in_plain_text_part():
    body = '<html><body><font color="red">Snoring?</font><br><a href="http://x.example">go</a>'
    assert "HTML_IN_PLAIN" in symbols(msg("From: a@b.example\n", body))
    assert "HTML_IN_PLAIN" not in symbols(msg("From: a@b.example\n", "use <br> in HTML"))


def test_freemail_reply_to_in_another_domain():
    got = symbols(msg("From: a@bank.example\nReply-To: abacha10@yahoo.com\n", "Reply please"))
    assert got["FREEMAIL_REPLYTO_NEQ_FROM"][1] == ("yahoo.com",)
    same = symbols(msg("From: a@yahoo.com\nReply-To: b@yahoo.com\n", "Reply please"))
    assert "FREEMAIL_REPLYTO_NEQ_FROM" not in same


def test_base64_text_part():
    body = base64.encodebytes(b"Buy now, cheap offer inside.\n")
    raw = msg("From: a@b.example\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
              "Content-Transfer-Encoding: base64\n", body)
    assert "MIME_BASE64_TEXT" in symbols(raw)


def test_html_image_only():
    html = '<html><body><a href="http://x.example/"><img src="http://x.example/a.gif"></a>Click</body></html>'
    raw = msg("From: a@b.example\nMIME-Version: 1.0\nContent-Type: text/html\n", html)
    assert "HTML_IMAGE_ONLY" in symbols(raw)


def test_remove_by_mailto_only_without_list_unsubscribe():
    body = "To be taken off: mailto:off@x.example?subject=remove\n"
    assert "REMOVE_BY_MAILTO" in symbols(msg("From: a@b.example\n", body))
    listed = msg("From: a@b.example\nList-Unsubscribe: <mailto:off@x.example>\n", body)
    assert "REMOVE_BY_MAILTO" not in symbols(listed)


def test_stock_pitch_and_forged_outlook():
    raw = msg("From: a@b.example\nX-Mailer: Microsoft Outlook Express 5.50\n",
              "Amnis Systems (OTCBB:AMNM) is a strong buy.\n")
    got = symbols(raw)
    assert got["STOCK_PITCH"][1] == ("otcbb",) and "FORGED_MUA_OUTLOOK" in got
    real = msg("From: a@b.example\nX-Mailer: Microsoft Outlook Express 5.50\n"
               "X-MimeOLE: Produced By Microsoft MimeOLE V5.50\n", "See you.\n")
    assert "FORGED_MUA_OUTLOOK" not in symbols(real)

"""Which relay handed a message over, and whether it had a reverse-DNS name (RDNS_NONE):
from the SMTP connection when the MTA names the client, from the Received headers of
stored mail. Pure: no database."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from aliasd.scanner.message import parse_message
from aliasd.scanner.relays import Relay, client_relay, handing_relay, parse_received
from aliasd.scanner.result import ScanRequest
from aliasd.scanner.rules import RuleContext, header_rules


@pytest.mark.parametrize("received, relay", [
    # Postfix and sendmail: the name in parentheses is the reverse-DNS name
    ("from mail.shop.example (mail.shop.example [198.51.100.7]) by mx.example.net (Postfix) with ESMTPS id 4Q2",
     Relay("198.51.100.7", "mail.shop.example", "mail.shop.example")),
    ("from pc-83-12 (unknown [83.12.44.9])\n\tby mx.example.net (Postfix) with SMTP id 9E1F5",
     Relay("83.12.44.9", "", "pc-83-12")),
    ("from xent.com ([64.161.22.236]) by dogma.slashnull.org (8.11.6/8.11.6) with ESMTP id g7M",
     Relay("64.161.22.236", "", "xent.com")),
    ("from lugh.tuatha.org (root@lugh.tuatha.org [194.125.145.45]) by dogma.slashnull.org (8.11.6/8.11.6)",
     Relay("194.125.145.45", "lugh.tuatha.org", "lugh.tuatha.org")),
    # Exim: the first name is the reverse-DNS name, a bare [IP] means none
    ("from mail.example.org ([192.0.2.44] helo=smtp.example.org) by mx.example.net with esmtp (Exim 4.96)",
     Relay("192.0.2.44", "mail.example.org", "smtp.example.org")),
    ("from [203.0.113.9] (helo=friend) by mx.example.net with smtp (Exim 4.96) id 1qX",
     Relay("203.0.113.9", "", "friend")),
    ("from [203.0.113.9] (port=51234 helo=friend) by mx.example.net with esmtp (Exim 4.96)",
     Relay("203.0.113.9", "", "friend")),
    ("from mail.example.org ([192.0.2.44]:40112) by mx.example.net with esmtps (Exim 4.96)",
     Relay("192.0.2.44", "mail.example.org", "mail.example.org")),
    # qmail: "unknown" when the address has no name
    ("from unknown (HELO bulk) (203.0.113.80) by mail.example.com with SMTP; 2 Aug 2002",
     Relay("203.0.113.80", "", "bulk")),
    ("from smtp.example.org (HELO smtp.example.org) (192.0.2.5) by mail.example.com with SMTP",
     Relay("192.0.2.5", "smtp.example.org", "smtp.example.org")),
    # formats that record no name either way
    ("from phobos [127.0.0.1] by localhost with IMAP (fetchmail-5.9.0) for jm@localhost",
     Relay("127.0.0.1", None, "phobos")),
    ("from EXCH01 ([10.1.2.3]) by EXCH02 with Microsoft SMTPSVC(6.0.3790.4675)", None),
    ("(qmail 12345 invoked by uid 0); 2 Aug 2002", None),
])  # fmt: skip
def test_received_formats_are_read_for_the_relay_and_its_name(received, relay):
    assert parse_received(received) == relay


def test_the_handing_relay_is_the_topmost_with_a_public_address():
    chain = [
        "from localhost (localhost [127.0.0.1]) by phobos.example (Postfix) with ESMTP id 7106",
        "from phobos [127.0.0.1] by localhost with IMAP (fetchmail-5.9.0)",
        "(qmail 99 invoked from network); 21 Aug 2002",
        "from int-mx1.corp.example (int-mx1.corp.example [172.16.52.254]) by list.example (Postfix)",
        "from pc-83-12 (unknown [83.12.44.9]) by int-mx1.corp.example (8.11.6/8.11.6) with SMTP",
        "from spoofed.example (mail.bank.example [198.51.100.1]) by pc-83-12",  # the spammer's own
    ]
    assert handing_relay(chain) == Relay("83.12.44.9", "", "pc-83-12")
    # a hop not understood on the way: the relay is not known, nothing is judged
    assert handing_relay(["from EXCH01 ([198.51.100.3]) by EXCH02 with Microsoft SMTPSVC", *chain]) is None
    assert handing_relay(chain[:2]) is None  # only local hops


def test_the_connection_decides_when_the_mta_names_a_public_client():
    # (documentation addresses such as 198.51.100.0/24 are not public: real ones here)
    headers = ["from pc-83-12 (unknown [83.12.44.9]) by mx.example.net (Postfix)"]
    named = client_relay("194.125.145.45", "mail.shop.example", "mail.shop.example", lambda: headers)
    assert named == Relay("194.125.145.45", "mail.shop.example", "mail.shop.example")
    assert client_relay("194.125.145.45", "unknown", "x", lambda: headers).rdns == ""
    assert client_relay("194.125.145.45", "[194.125.145.45]", "x", lambda: headers).rdns == ""
    assert client_relay("194.125.145.45", None, "x", lambda: headers) is None  # not named: not known
    # a local injection or an internal relay: the headers say who handed it over
    assert client_relay("127.0.0.1", "localhost", "x", lambda: headers) == Relay("83.12.44.9", "", "pc-83-12")


def symbols(raw: bytes, **request) -> dict:
    pm = parse_message(raw)
    ctx = RuleContext(ScanRequest(message=raw, **request), pm, dt.datetime.now(dt.UTC))
    return {s.name: s.options for s in header_rules(ctx)}


MESSAGE = (b"Received: from pc-83-12 (unknown [83.12.44.9])\n\tby mx.example.net (Postfix) with SMTP id 1\n"
           b"From: a@shop.example\nTo: b@example.net\nSubject: hi\nMessage-ID: <1@shop.example>\n"
           b"Date: Mon, 20 May 2024 03:14:05 +0000\n\nhello\n")


def test_rdns_none_names_the_relay_without_a_name():
    assert symbols(MESSAGE)["RDNS_NONE"] == ("83.12.44.9",)
    named = MESSAGE.replace(b"(unknown [83.12.44.9])", b"(mail.shop.example [83.12.44.9])")
    assert "RDNS_NONE" not in symbols(named)
    # the milter's connection wins over what the headers say
    assert "RDNS_NONE" not in symbols(MESSAGE, client_addr="194.125.145.45", client_name="mail.shop.example")
    assert symbols(named, client_addr="194.125.145.45", client_name="unknown")["RDNS_NONE"] == ("194.125.145.45",)
    assert "RDNS_NONE" not in symbols(b"From: a@b.example\n\nno Received at all\n")


def test_hostile_received_headers_are_read_in_bounded_time():
    huge = b"Received: from " + b"a" * 200_000 + b" (" + b"with (Exim " * 20_000 + b"\n"
    many = b"".join(b"Received: from x" + str(i).encode() + b" ([10.0.0.1]) by y\n" for i in range(5000))
    started = time.perf_counter()
    symbols(huge + MESSAGE)
    symbols(many + MESSAGE)
    assert time.perf_counter() - started < 2.0

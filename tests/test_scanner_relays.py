"""The relays a message passed outside this side: which one handed it over and whether it
had a reverse-DNS name (RDNS_NONE), from the SMTP connection when the MTA names the client,
from the Received headers of stored mail; the chain as SpamAssassin's header rules read it.
Pure: no database."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from aliasd.scanner.message import parse_message
from aliasd.scanner.relays import (
    Relay,
    external_relays,
    first_external_relay,
    iter_hops,
    parse_received,
    read_hops,
    spamassassin_relays,
)
from aliasd.scanner.result import ScanRequest
from aliasd.scanner.rules import RuleContext, header_rules
from tests.harness.spamassassin import spamassassin_hits


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
    # an authenticated submission says so
    ("from [192.168.1.20] (dsl-84.example [84.1.2.3]) (Authenticated sender: ann@example.org)"
     " by smtp.example.org (Postfix) with ESMTPSA id 4F1",
     Relay("84.1.2.3", "dsl-84.example", "[192.168.1.20]", "ESMTPSA")),
])  # fmt: skip
def test_received_formats_are_read_for_the_relay_and_its_name(received, relay):
    assert parse_received(received) == relay


def handing(headers: list[str]) -> Relay | None:
    relays = external_relays(None, None, None, lambda: read_hops(headers))
    return relays[0] if relays else None


def test_the_handing_relay_is_the_topmost_with_a_public_address():
    chain = [
        "from localhost (localhost [127.0.0.1]) by phobos.example (Postfix) with ESMTP id 7106",
        "from phobos [127.0.0.1] by localhost with IMAP (fetchmail-5.9.0)",
        "(qmail 99 invoked from network); 21 Aug 2002",
        "from int-mx1.corp.example (int-mx1.corp.example [172.16.52.254]) by list.example (Postfix)",
        "from pc-83-12 (unknown [83.12.44.9]) by int-mx1.corp.example (8.11.6/8.11.6) with SMTP",
        "from spoofed.example (mail.bank.example [198.51.100.1]) by pc-83-12",  # the spammer's own
    ]
    assert handing(chain) == Relay("83.12.44.9", "", "pc-83-12")
    # a hop not understood on the way: the relay is not known, nothing is judged
    assert handing(["from EXCH01 ([198.51.100.3]) by EXCH02 with Microsoft SMTPSVC", *chain]) is None
    assert handing(chain[:2]) is None  # only local hops
    # below it, the hops it recorded itself, as far as they are read (the unreadable left out)
    assert external_relays(None, None, None, lambda: read_hops(chain))[1:] == [
        Relay("198.51.100.1", "mail.bank.example", "spoofed.example")]


def test_a_mail_fetchers_hand_over_is_not_a_relay_the_message_passed():
    """fetchmail and getmail record their pick-up from the mailbox's server ("with IMAP",
    "with POP3") on top of the server's own Received headers: SpamAssassin skips those
    lines, and so does the chain, whatever address the server has."""
    below = [
        "from xent.example ([64.161.22.236]) by dogma.example (8.11.6/8.11.6) with ESMTP id g6H7",
        "from hotmail.com (unknown [200.213.0.3]) by xent.example (Postfix) with SMTP id B9D8",
    ]
    for fetcher in ("from dogma.example [212.17.35.15] by localhost with IMAP (fetchmail-5.9.0)",
                    "from pop3.mail.example (195.41.46.251) by loki.valhalla with POP3; 14 Apr 2010"):
        chain = ["from localhost (localhost [127.0.0.1]) by phobos.example (Postfix) with ESMTP id 7106",
                 fetcher, *below]
        assert handing(chain) == Relay("64.161.22.236", "", "xent.example")
        assert first_external_relay(None, None, None, lambda c=chain: iter_hops(c)) == handing(chain)
    # the same header without the fetcher's protocol is a relay like any other
    assert handing(["from dogma.example (dogma.example [212.17.35.15]) by mx.example with ESMTP",
                    *below]) == Relay("212.17.35.15", "dogma.example", "dogma.example")


def test_the_handing_relay_alone_is_found_without_reading_the_headers_below_it():
    chain = [
        "from localhost (localhost [127.0.0.1]) by phobos.example (Postfix) with ESMTP id 7106",
        "from pc-83-12 (unknown [83.12.44.9]) by int-mx1.corp.example (8.11.6/8.11.6) with SMTP",
    ]

    class Unreadable:  # a header below the first public relay: reading it fails the test
        def __str__(self) -> str:
            raise AssertionError("read a Received header below the handing relay")

    below = [*chain, Unreadable()]
    assert first_external_relay(None, None, None, lambda: iter_hops(below)) == Relay("83.12.44.9", "", "pc-83-12")
    # the same relay the whole chain starts with, whatever the case
    cases = [chain, chain[:1], ["from EXCH01 ([198.51.100.3]) by EXCH02 with Microsoft SMTPSVC", *chain]]
    for headers in cases:
        for client in ((None, None), ("194.125.145.45", "mail.shop.example"), ("194.125.145.45", None),
                       ("127.0.0.1", "localhost")):
            whole = external_relays(*client, "helo", lambda h=headers: read_hops(h))
            assert first_external_relay(*client, "helo", lambda h=headers: iter_hops(h)) == (
                whole[0] if whole else None)


def test_the_connection_decides_when_the_mta_names_a_public_client():
    # (documentation addresses such as 198.51.100.0/24 are not public: real ones here)
    headers = ["from pc-83-12 (unknown [83.12.44.9]) by mx.example.net (Postfix)"]
    named = external_relays("194.125.145.45", "mail.shop.example", "mail.shop.example", lambda: read_hops(headers))
    # the client first, then what its message's headers record
    assert named == [Relay("194.125.145.45", "mail.shop.example", "mail.shop.example"),
                     Relay("83.12.44.9", "", "pc-83-12")]
    assert external_relays("194.125.145.45", "unknown", "x", lambda: read_hops(headers))[0].rdns == ""
    assert external_relays("194.125.145.45", "[194.125.145.45]", "x", lambda: read_hops(headers))[0].rdns == ""
    assert external_relays("194.125.145.45", None, "x", lambda: read_hops(headers)) == []  # not named: not known
    # a local injection or an internal relay: the headers say who handed it over
    assert external_relays("127.0.0.1", "localhost", "x", lambda: read_hops(headers)) == [Relay("83.12.44.9", "", "pc-83-12")]


def test_the_chain_is_written_as_spamassassin_rules_read_it():
    chain = [Relay("83.12.44.9", "", "pc-83-12"), Relay("84.1.2.3", "dsl-84.example", "x", "ESMTPSA")]
    assert spamassassin_relays(chain) == (
        "[ ip=83.12.44.9 rdns= helo=pc-83-12 by= ident= envfrom= intl=0 id= auth= msa=0 ] "
        "[ ip=84.1.2.3 rdns=dsl-84.example helo=x by= ident= envfrom= intl=0 id= auth=ESMTPSA msa=0 ]")
    assert spamassassin_relays([]) == ""


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


def test_rdns_none_after_a_mail_fetcher_is_what_spamassassin_finds():
    head = ("Received: from localhost (localhost [127.0.0.1])\n\tby phobos.example (Postfix) with ESMTP id 7106\n"
            "Received: from dogma.example [212.17.35.15]\n\tby localhost with IMAP (fetchmail-5.9.0)\n"
            "Received: from xent.example ({name}[64.161.22.236]) by dogma.example\n\t(8.11.6/8.11.6) with ESMTP id g6H7\n"
            "From: a@shop.example\nTo: b@example.net\nSubject: hi\nMessage-ID: <1@shop.example>\n"
            "Date: Mon, 20 May 2024 03:14:05 +0000\n\nhello\n")
    for name, fires in (("", True), ("mail.xent.example ", False)):
        raw = head.format(name=name).encode()
        assert ("RDNS_NONE" in symbols(raw)) is fires
        assert ("RDNS_NONE" in spamassassin_hits(raw)) is fires


def test_hostile_received_headers_are_read_in_bounded_time():
    huge = b"Received: from " + b"a" * 200_000 + b" (" + b"with (Exim " * 20_000 + b"\n"
    many = b"".join(b"Received: from x" + str(i).encode() + b" ([10.0.0.1]) by y\n" for i in range(5000))
    started = time.perf_counter()
    symbols(huge + MESSAGE)
    symbols(many + MESSAGE)
    assert time.perf_counter() - started < 2.0

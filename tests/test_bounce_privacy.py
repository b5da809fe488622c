"""The rule that makes delivery status notifications about forwarded mail name the alias
instead of the owner's mailbox (aliasd.core.bounce_privacy)."""

from __future__ import annotations

import email

import pytest

from aliasd.core import aliases as core
from aliasd.core.bounce_privacy import HIDDEN, alias_mailboxes, hide_mailboxes

ALIAS = "shop.example@example.net"
MAILBOX = "full@real.example"
BOUNDARY = "19E1E240C8A.1796693330/mx.aliasd.test"
HEADERS = [
    ("Received", b"by mx.aliasd.test (Postfix)\n\tid 2507E240C8E"),
    ("From", b"Mail Delivery System <MAILER-DAEMON@mx.aliasd.test>"),
    ("Subject", b"Undelivered Mail Returned to Sender"),
    ("To", b"orders@store.example"),
    ("MIME-Version", b"1.0"),
    ("Content-Type", b'multipart/report; report-type=delivery-status;\n\tboundary="'
     + BOUNDARY.encode() + b'"'),
]


def postfix_bounce(final: str = MAILBOX, original: str = ALIAS, orcpt: str | None = None,
                   returned_headers: str = "") -> bytes:
    """A body as Postfix 3.7 writes it for a refused forwarded copy (taken from one)."""
    return (
        f"This is a MIME-encapsulated message.\r\n\r\n--{BOUNDARY}\r\n"
        "Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host mx.aliasd.test.\r\n\r\n"
        f"<{final}> (expanded from <{original}>): host\r\n"
        "    127.0.0.1[127.0.0.1] said: 552 5.2.2 <" + final.upper() + ">: mailbox full\r\n"
        "    (in reply to RCPT TO command)\r\n\r\n"
        f"--{BOUNDARY}\r\nContent-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.aliasd.test\r\nX-Postfix-Queue-ID: 19E1E240C8A\r\n\r\n"
        f"Final-Recipient: rfc822; {final}\r\n"
        f"Original-Recipient: rfc822;{orcpt or original}\r\n"
        "Action: failed\r\nStatus: 5.2.2\r\nDiagnostic-Code: smtp; 552 5.2.2 mailbox full\r\n\r\n"
        f"--{BOUNDARY}\r\nContent-Description: Undelivered Message\r\n"
        "Content-Type: message/rfc822\r\n\r\n"
        f"Received: from sender.example\r\n\tfor <{original}>\r\n{returned_headers}"
        f"To: {original}\r\nFrom: orders@store.example\r\nSubject: an order\r\n\r\n"
        "Your order.\r\n\r\n"
        f"--{BOUNDARY}--\r\n"
    ).encode()


def _without_text(body: bytes) -> bytes:
    return body.replace(f"(expanded from <{ALIAS}>)".encode(), b"")


class Aliases:
    """The lookup the milter passes: alias → its mailboxes; records what it was asked."""

    def __init__(self, known: dict[str, set[str]] | None = None) -> None:
        self.known = {ALIAS: {MAILBOX, "alice@real.example"}} if known is None else known
        self.asked: list[list[str]] = []

    def __call__(self, addresses: list[str]) -> dict[str, set[str]]:
        self.asked.append(addresses)
        return {a: self.known[a] for a in addresses if a in self.known}


def whole(headers, masking, body: bytes) -> bytes:
    changed = {(n.lower(), i): v for n, i, v in masking.headers}
    seen: dict[str, int] = {}
    out = b""
    for name, value in headers:
        index = seen[name.lower()] = seen.get(name.lower(), 0) + 1
        value = changed.get((name.lower(), index), value)
        out += name.encode() + b": " + (value.encode() if isinstance(value, str) else value)
        out += b"\r\n"
    return out + b"\r\n" + (masking.body if masking.body is not None else body)


def test_a_bounce_of_forwarded_mail_names_the_alias_everywhere_and_says_why():
    body = postfix_bounce()
    masking = hide_mailboxes("", HEADERS, body, Aliases())
    assert masking.body is not None
    text = masking.body.decode()
    assert "real.example" not in text.lower()
    assert f"<{ALIAS}>: host" in text  # "(expanded from <alias>)" said nothing new
    assert f"said: 552 5.2.2 <{ALIAS}>: mailbox full" in text
    assert f"Final-Recipient: rfc822; {ALIAS}" in text
    # still a DSN a mail reader can take apart
    report = next(p for p in email.message_from_bytes(whole(HEADERS, masking, body)).walk()
                  if p.get_content_type() == "message/delivery-status")
    assert report.get_payload()[1]["Final-Recipient"] == f"rfc822; {ALIAS}"


def test_a_bounce_whose_original_recipient_the_sender_chose_is_masked_all_the_same():
    # ORCPT= at RCPT TO becomes Original-Recipient; Postfix's own text still names the alias
    masking = hide_mailboxes("", HEADERS, postfix_bounce(orcpt="me@attacker.example"),
                             Aliases())
    assert masking.body is not None and b"real.example" not in masking.body.lower()


def test_without_postfixs_expanded_from_text_a_dsn_is_left_alone():
    # Original-Recipient is the sender's ORCPT= when given, and the returned headers are
    # the sender's words: neither may decide what gets rewritten
    body = postfix_bounce(returned_headers=f"X-Aliasd-Alias: {ALIAS} (site shop.example)\r\n")
    aliases = Aliases()
    assert not hide_mailboxes("", HEADERS, _without_text(body), aliases)
    assert aliases.asked == []


def test_the_returned_message_is_left_as_the_sender_wrote_it():
    # rewriting a mailbox the sender guessed into their own message would confirm it
    body = postfix_bounce().replace(b"Your order.", b"Is it full@real.example?")
    masking = hide_mailboxes("", HEADERS, body, Aliases())
    assert masking.body.endswith(b"Is it full@real.example?\r\n\r\n--" + BOUNDARY.encode()
                                 + b"--\r\n")
    assert masking.body.lower().count(b"real.example") == 1


def test_a_dsn_for_mail_not_forwarded_by_aliasd_is_left_alone():
    aliases = Aliases()
    body = postfix_bounce(final="bob@real.example", original="bob@relay.example")
    assert not hide_mailboxes("", HEADERS, body, aliases)
    assert aliases.asked == [["bob@relay.example"]]


def test_a_mailbox_that_is_not_the_aliases_destination_is_left_alone():
    # the alias exists, but the reported mailbox is not where it forwards
    body = postfix_bounce(final="someone@else.example")
    assert not hide_mailboxes("", HEADERS, body, Aliases())


def test_mail_that_is_not_a_dsn_is_not_even_looked_up():
    aliases = Aliases()
    body = postfix_bounce()
    assert not hide_mailboxes("orders@store.example", HEADERS, body, aliases)
    plain = [(n, v) for n, v in HEADERS if n != "Content-Type"] + [
        ("Content-Type", b"text/plain")]
    assert not hide_mailboxes("", plain, body, aliases)
    assert aliases.asked == []


@pytest.mark.parametrize("body", [
    b"",
    b"no MIME structure at all\r\n",
    _without_text(postfix_bounce().replace(b"Final-Recipient: rfc822; ",
                                           b"Final-Recipient: x400; ")),
    _without_text(postfix_bounce().split(b"Content-Type: message/delivery-status")[0]),
    b"--" + BOUNDARY.encode() + b"\r\nContent-Type: message/delivery-status\r\n\r\n\xff\x00:::\r\n",
    _without_text(postfix_bounce()).replace(BOUNDARY.encode(), b"another-boundary"),
], ids=["empty", "not mime", "other address type", "cut before the report", "junk report",
        "wrong boundary"])
def test_a_malformed_dsn_passes_untouched(body):
    assert not hide_mailboxes("", HEADERS, body, Aliases())


def test_postfixs_own_text_is_enough_when_the_report_is_unreadable():
    body = postfix_bounce().replace(b"Final-Recipient: rfc822; ", b"Final-Recipient: x400; ")
    masking = hide_mailboxes("", HEADERS, body, Aliases())
    assert b"real.example" not in masking.body.lower()


def test_a_longer_address_containing_the_mailbox_is_another_address():
    body = postfix_bounce().replace(b"at host mx.aliasd.test.",
                                    b"at host mx.aliasd.test (xfull@real.example.org).")
    masking = hide_mailboxes("", HEADERS, body, Aliases())
    assert b"xfull@real.example.org" in masking.body


def test_one_mailbox_behind_two_aliases_does_not_tie_them_together():
    # each recipient's paragraph and report block names its own alias, exactly as for
    # two aliases with different mailboxes
    other = "news@example.net"
    aliases = Aliases({ALIAS: {MAILBOX}, other: {MAILBOX}})
    body = postfix_bounce()
    second_text = f"<{MAILBOX}> (expanded from <{other}>): mailbox full\r\n\r\n"
    body = body.replace(b"RCPT TO command)\r\n\r\n",
                        b"RCPT TO command)\r\n\r\n" + second_text.encode(), 1)
    second_block = (f"Final-Recipient: rfc822; {MAILBOX}\r\nOriginal-Recipient: rfc822;{other}"
                    "\r\nAction: failed\r\nDiagnostic-Code: smtp; 552 mailbox full\r\n\r\n--")
    body = body.replace(b"mailbox full\r\n\r\n--" + BOUNDARY.encode() + b"\r\nContent-Description: Undel",
                        b"mailbox full\r\n\r\n" + second_block.encode() + BOUNDARY.encode()
                        + b"\r\nContent-Description: Undel", 1)
    masking = hide_mailboxes("", HEADERS, body, aliases)
    text = masking.body.decode()
    assert "real.example" not in text and HIDDEN not in text
    assert f"<{ALIAS}>: host" in text and f"<{other}>: mailbox full" in text
    finals = [line for line in text.splitlines() if line.startswith("Final-Recipient")]
    assert finals == [f"Final-Recipient: rfc822; {ALIAS}", f"Final-Recipient: rfc822; {other}"]


def test_headers_naming_the_mailbox_are_changed_in_place():
    headers = [*HEADERS, ("X-Failed-Recipients", b"Full@Real.Example")]
    masking = hide_mailboxes("", headers, postfix_bounce(), Aliases())
    assert masking.headers == [("X-Failed-Recipients", 1, ALIAS)]


def test_a_body_cut_short_keeps_the_notification_and_drops_the_returned_message():
    body = postfix_bounce()
    cut = body[:body.index(b"Subject: an order")]
    masking = hide_mailboxes("", HEADERS, cut, Aliases(), truncated=True)
    assert masking.body.endswith(f"\r\n--{BOUNDARY}--\r\n".encode())
    assert b"Undelivered Message" not in masking.body
    assert b"real.example" not in masking.body.lower()
    assert f"Final-Recipient: rfc822; {ALIAS}".encode() in masking.body


def test_alias_mailboxes_reads_destinations_owner_mailbox_and_extensions(database):
    with database.session() as s:
        alice = core.create_user(s, "alice", "Alice@Real.Example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, ALIAS, alice, destinations=[MAILBOX])
        core.create_alias(s, "github.com@example.net", alice)
    with database.reading() as connection:
        found = alias_mailboxes(connection, ["shop.example+promo@example.net",
                                             "github.com@example.net", "nobody@example.net"],
                                "+")
    assert found == {"shop.example+promo@example.net": {MAILBOX, "alice@real.example"},
                     "github.com@example.net": {"alice@real.example"}}


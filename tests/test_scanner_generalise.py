"""What keeps the scanner right on mail unlike what it learned: mailing-list headers
are no Bayes evidence, Bayes' ham vote cannot take back what the rules agree on, and
the fast paths of header reading give what the standard library gives."""

from __future__ import annotations

import email.utils

import pytest

from aliasd.config import load_settings
from aliasd.scanner.bundled import no_veto
from aliasd.scanner.message import parse_address, parse_message
from aliasd.scanner.result import Symbol
from aliasd.scanner.tokens import message_tokens

BODY = b"Subject: hello\nFrom: a@example.org\nTo: b@example.net\n%s\nSome words of the body here.\n"


def tokens(headers: bytes) -> set[int]:
    return set(message_tokens(parse_message(BODY % headers)).tolist())


def test_which_list_a_message_came_through_is_no_bayes_evidence():
    # Spam sent through a list learned as ham must not look like ham for the list's
    # name; that list headers are there still counts.
    fork = tokens(b"List-Id: Friends of Rohit Khare <fork.xent.com>\nX-Mailman-Version: 2.0.11\n"
                  b"Precedence: bulk\nList-Unsubscribe: <mailto:fork-request@xent.com>\n")
    other = tokens(b"List-Id: Something else <other.example.org>\nX-Mailman-Version: 2.1.9\n"
                   b"Precedence: list\nList-Unsubscribe: <mailto:leave@other.example.org>\n")
    bare = tokens(b"")
    assert fork == other != bare


def test_bayes_ham_counts_nothing_once_the_rules_alone_mark_spam(tmp_path):
    settings = load_settings(environ={}, data_dir=str(tmp_path))
    ham = Symbol("BAYES_HAM", -3.0, ("1.00%",), "Bayes: message is probably ham")
    kept = no_veto(ham, settings.action_add_header - 0.1, settings)
    assert kept is ham
    dropped = no_veto(ham, settings.action_add_header, settings)
    assert dropped.score == 0.0 and dropped.name == "BAYES_HAM"
    assert dropped.options == ("1.00%", "rules agree on spam")
    spam = Symbol("BAYES_SPAM", 7.0, ("99.00%",))
    assert no_veto(spam, 10.0, settings) is spam


@pytest.mark.parametrize("value", [
    '"Joe Bloggs" <joe@example.org>', "Joe Bloggs <joe@example.org>", "<joe@example.org>",
    "joe@example.org", "Joe<joe@example.org>", '"Bloggs, Joe" <joe@example.org>',
    "joe@example.org (Joe)", "Joe <joe@example.org>, Ann <ann@example.org>", "undisclosed-recipients:;",
    "[hotmail.com]@relay.example", '"J \\"Q\\" B" <j@example.org>', "", "no address at all",
])
def test_address_headers_read_as_the_standard_library_reads_them(value):
    assert parse_address(value) == email.utils.parseaddr(value)

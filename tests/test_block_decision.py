"""One decision for "is this sender blocked for this recipient" (aliasd.core.block_decision),
on both engines: server-wide rules of every kind judged as Postfix judges them (domain
rules at MAIL FROM and in the sender headers, imported and admin regex rules on every
header line), per-user and per-alias blocks, the protected domains no block may touch,
and the scanner and `aliasd scan` agreeing with it."""

from __future__ import annotations

import re

import pytest

from aliasd.core import aliases as core
from aliasd.core import blocking, sender_blocks
from aliasd.core.block_decision import Sender, blocked_for, load_blocklist, server_block
from aliasd.core.block_protection import covering, is_protected
from aliasd.core.blocking import BlockError, domain_pattern
from aliasd.core.sender_blocks import SenderBlockError
from aliasd.models import BlockRule


def rule(s, body: str, flags: str = "", *, source: str = "manual", settings) -> BlockRule:
    return blocking.add_regex_rule(s, settings, body, flags, source=source)


def sender(envelope: str = "", **headers: str) -> Sender:
    return Sender.of_message(envelope, [(k.replace("_", "-"), v) for k, v in headers.items()])


# --- matching, without a database --------------------------------------------------------
def test_covering_means_the_domain_or_a_parent_never_a_bare_tld():
    names = {"massnews.gr", "com"}
    assert covering("massnews.gr", names) == "massnews.gr"
    assert covering("news.massnews.gr", names) == "massnews.gr"
    assert covering("massnews.gr.example.com", names) is None  # "com" alone never counts
    assert covering("xmassnews.gr", names) is None
    assert covering(None, names) is None


def test_protected_means_equal_inside_or_a_parent():
    protected = {"example.net", "gmail.com"}
    assert is_protected("example.net", protected)
    assert is_protected("sub.example.net", protected)  # forged subdomain of a served domain
    assert is_protected("net", protected)  # a block of the parent would cover it
    assert not is_protected("example.org", protected)
    assert not is_protected("mygmail.com", protected)


HEADER_LINES = [
    "From: promo@massnews.gr", "From: Promo <promo@news.massnews.gr>", "Reply-To: x@MASSNEWS.GR",
    "Sender: bulk.massnews.gr", "Return-Path: <b@massnews.gr>", "From: a@massnews.gr.example.com",
    "From: a@massnews.gr-shop.com", "From: a@xmassnews.gr", "From: massnews.gr <a@b.example>",
    "To: someone@massnews.gr", "Subject: massnews.gr news", "From: a@massnews.gr.", "From: a@massnews.grx",
    "From: x\n\t<y@massnews.gr>", "From: a@massnews_gr", "Received: from massnews.gr",
]


@pytest.mark.parametrize("line", HEADER_LINES)
def test_domain_rules_match_the_header_lines_their_pcre_pattern_matches(line):
    """A domain rule is judged by domain (fast over thousands of rules); the answer is the
    one its header_checks pattern gives, with Postfix's pcre defaults (i, dot-all)."""
    from aliasd.core.block_decision import BlockList, _ServerRule

    pattern = domain_pattern("massnews.gr")[1:-1]
    expected = re.search(pattern, line, re.IGNORECASE | re.DOTALL) is not None
    blocklist = BlockList(header_domains={"massnews.gr": _ServerRule(1, "t", pattern)})
    name, _, value = line.partition(": ")
    got = server_block(blocklist, Sender.of_message("", [(name, value)])) is not None
    assert got == expected


# --- server-wide rules --------------------------------------------------------------------
def test_imported_domain_rule_blocks_at_mail_from_and_in_any_header(database, settings):
    with database.session() as s:
        imported = rule(s, r"massnews\.gr", source="imported", settings=settings)
        blocklist = load_blocklist(s)
    at_mail_from = blocked_for(blocklist, sender("promo@news.massnews.gr"))
    assert (at_mail_from.scope, at_mail_from.id, at_mail_from.matched) == ("server", imported.id, "massnews.gr")
    assert at_mail_from.reject_text == f"Plz stop sending SPAM id={imported.id}"
    in_subject = blocked_for(blocklist, sender("a@ok.example", Subject="see MassNews.gr today"))
    assert in_subject is not None and in_subject.id == imported.id  # as header_checks would
    assert blocked_for(blocklist, sender("a@ok.example", Subject="massnewsXgr")) is None


def test_regex_rules_follow_postfix_flags(database, settings):
    with database.session() as s:
        insensitive = rule(s, r"^Subject:.*cheap watches", settings=settings)
        sensitive = rule(s, r"^X-Mailer: BulkBlaster", "i", settings=settings)  # i toggles: exact case
        anchored = rule(s, r"X-Campaign:", "A", settings=settings)
        blocklist = load_blocklist(s)
    assert blocked_for(blocklist, sender("a@b.example", Subject="CHEAP Watches")).id == insensitive.id
    assert blocked_for(blocklist, sender("a@b.example", X_Mailer="BulkBlaster 2")).id == sensitive.id
    assert blocked_for(blocklist, sender("a@b.example", X_Mailer="bulkblaster 2")) is None
    assert blocked_for(blocklist, sender("a@b.example", X_Campaign="1")).id == anchored.id
    assert blocked_for(blocklist, sender("a@b.example", X_Other="X-Campaign: 1")) is None
    # a folded header is one logical line, newline included, and . matches it
    folded = sender("a@b.example", Subject="hello,\n\tcheap watches")
    assert blocked_for(blocklist, folded).id == insensitive.id


def test_disabled_rules_and_the_null_sender_block_nothing(database, settings):
    with database.session() as s:
        r = blocking.block_domain(s, settings, "massnews.gr")
        blocking.set_enabled(s, settings, r.id, False)
        blocklist = load_blocklist(s)
    assert blocked_for(blocklist, sender("a@massnews.gr", From="a@massnews.gr")) is None
    assert blocked_for(blocklist, sender("")) is None


def test_server_rules_refuse_protected_and_exempt_domains_on_every_path(database, settings):
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@mail.example")
        core.create_domain(s, "example.net", alice)
        for domain in ("example.net", "x.example.net", "mail.example", "gmail.com", "net"):
            with pytest.raises(BlockError):
                blocking.block_domain(s, settings, domain)
        with pytest.raises(BlockError):
            rule(s, r"gmail\.com", settings=settings)
        imported = rule(s, r"gmail\.com", source="imported", settings=settings)
        assert not imported.enabled and "imported disabled" in imported.note
        forced = blocking.block_domain(s, settings, "gmail.com", force=True)
        assert forced.enabled


# --- per-user and per-alias blocks --------------------------------------------------------
@pytest.fixture
def people(database):
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@gmail.com")
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "example.net", alice)
        a1 = core.create_alias(s, "shop@example.net", alice, site="shop.example")
        a2 = core.create_alias(s, "forum@example.net", alice, site="forum.example")
        b1 = core.create_alias(s, "b@example.net", bob, site="b.example")
        return {"alice": alice.id, "bob": bob.id, "a1": a1.id, "a2": a2.id, "b1": b1.id}


def test_user_and_alias_blocks_apply_to_their_recipients_only(database, people):
    with database.session() as s:
        sender_blocks.add_block(s, people["bob"], "gmail.com")  # alice's mailbox domain: bob's call
        a1 = s.get(core.Alias, people["a1"])
        sender_blocks.add_block(s, people["alice"], "deals@shop.example", alias=a1)
        blocklist = load_blocklist(s)
    gmail = sender("x@gmail.com", From="X <x@gmail.com>")
    assert blocked_for(blocklist, gmail) is None  # nothing server-wide
    assert blocked_for(blocklist, gmail, owner_id=people["alice"], alias_id=people["a1"]) is None
    assert blocked_for(blocklist, gmail, owner_id=people["bob"], alias_id=people["b1"]).scope == "user"
    # the From: address counts as well as the envelope sender; subdomains are covered
    bounce = sender("bounce-123@esp.example", From="x@mail.gmail.com")
    assert blocked_for(blocklist, bounce, owner_id=people["bob"]).matched == "gmail.com"
    deals = sender("deals@shop.example", From="deals@shop.example")
    assert blocked_for(blocklist, deals, owner_id=people["alice"], alias_id=people["a1"]).scope == "alias"
    assert blocked_for(blocklist, deals, owner_id=people["alice"], alias_id=people["a2"]) is None
    orders = sender("orders@shop.example", From="orders@shop.example")
    assert blocked_for(blocklist, orders, owner_id=people["alice"], alias_id=people["a1"]) is None


def test_sender_blocks_are_validated_idempotent_and_owned(database, people):
    with database.session() as s:
        first = sender_blocks.add_block(s, people["alice"], " Spam.Example. ")
        assert first.sender == "spam.example"
        assert sender_blocks.add_block(s, people["alice"], "@spam.example").id == first.id
        for bad in ("", "not a domain", "a@@b", "x" * 400):
            with pytest.raises(SenderBlockError):
                sender_blocks.add_block(s, people["alice"], bad)
        with pytest.raises(SenderBlockError):  # her own mailbox domain
            sender_blocks.add_block(s, people["alice"], "gmail.com")
        with pytest.raises(SenderBlockError):  # a served domain
            sender_blocks.add_block(s, people["bob"], "x.example.net")
        b1 = s.get(core.Alias, people["b1"])
        with pytest.raises(core.NotFound):  # bob's alias is not alice's to block for
            sender_blocks.add_block(s, people["alice"], "z.example", alias=b1)
        with pytest.raises(core.NotFound):
            sender_blocks.remove_block(s, people["bob"], first.id)
        sender_blocks.remove_block(s, people["alice"], first.id)
        assert sender_blocks.list_blocks(s, people["alice"]) == []


# --- the scanner and the CLI ask the same question ----------------------------------------
def test_aliasd_scan_shows_blocklisted_after_an_import(aliasd_cli, tmp_path):
    table = tmp_path / "header_checks"
    table.write_text('/massnews\\.gr/ REJECT "Plz stop sending SPAM id=7"\n')
    aliasd_cli("blocklist", "import", "--no-write", str(table))
    message = tmp_path / "promo.eml"
    message.write_bytes(b"From: Promo <promo@massnews.gr>\r\nTo: shop@example.net\r\n"
                        b"Subject: Cheap watches\r\nMessage-ID: <1@massnews.gr>\r\n"
                        b"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nBuy now.\r\n")
    out = aliasd_cli("scan", str(message), "--from", "promo@massnews.gr").stdout
    assert "BLOCKLISTED" in out, out
    clean = message.read_bytes().replace(b"massnews.gr", b"shop.example")
    message.write_bytes(clean)
    assert "BLOCKLISTED" not in aliasd_cli("scan", str(message), "--from", "a@shop.example").stdout


def test_blocklist_add_refuses_an_exempt_domain_unless_forced(aliasd_cli):
    refused = aliasd_cli("blocklist", "add", "--no-write", "gmail.com", check=False)
    assert refused.returncode != 0 and "autoblock_exempt_domains" in refused.stderr
    forced = aliasd_cli("blocklist", "add", "--no-write", "--force", "gmail.com")
    assert "gmail" in forced.stdout


def test_blocklist_enable_refuses_a_rule_for_an_exempt_domain_unless_forced(aliasd_cli):
    """Enabling is adding again: the same refusal, the same --force."""
    rule_id = aliasd_cli("blocklist", "add", "--no-write", "--force", "gmail.com").stdout.split()[0]
    aliasd_cli("blocklist", "disable", "--no-write", rule_id)
    refused = aliasd_cli("blocklist", "enable", "--no-write", rule_id, check=False)
    assert refused.returncode != 0 and "autoblock_exempt_domains" in refused.stderr
    assert f"{rule_id}\toff" in aliasd_cli("blocklist", "list", "--all").stdout
    aliasd_cli("blocklist", "enable", "--no-write", "--force", rule_id)
    assert f"{rule_id}\ton" in aliasd_cli("blocklist", "list", "--all").stdout


def test_the_cached_block_list_sees_every_change_and_rereads_only_then(database, settings, people):
    from aliasd.core.block_decision import BlockListCache

    cache = BlockListCache(database, ttl=0)
    first = cache.get()
    assert cache.get() is first  # nothing changed: the same copy, nothing re-read
    spam = sender("x@spam.example")
    with database.session() as s:
        block = sender_blocks.add_block(s, people["alice"], "spam.example")
    assert blocked_for(cache.get(), spam, owner_id=people["alice"]) is not None
    with database.session() as s:
        sender_blocks.remove_block(s, people["alice"], block.id)
        r = blocking.block_domain(s, settings, "spam.example")
    assert blocked_for(cache.get(), spam).scope == "server"
    with database.session() as s:
        blocking.set_enabled(s, settings, r.id, False)
    assert blocked_for(cache.get(), spam) is None


@pytest.mark.parametrize("envelope,raw", [
    ("", b""),
    ("<>", b"\x00\xff\xfe garbage without headers"),
    ("x@[192.0.2.1]", b"From: =?utf-8?q?broken\r\n\r\nbody"),
    ("not an address", b"From: <<<@@>>>\r\nReply-To: \xff\xfe@\r\n continued\r\n\r\n"),
    ("a@" + "b" * 300 + ".example", b"Subject: " + b"x" * 200_000 + b"\r\n\r\n"),
])
def test_junk_senders_are_judged_without_error(database, settings, envelope, raw):
    with database.session() as s:
        blocking.block_domain(s, settings, "massnews.gr")
        rule(s, r"^Subject:.*never", settings=settings)
        blocklist = load_blocklist(s)
    assert blocked_for(blocklist, Sender.of_raw_message(envelope, raw), owner_id=1, alias_id=1) is None

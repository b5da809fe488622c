"""Quarantine and learning pages through Flask's test client on SQLite and PostgreSQL:
who sees which held message, learning from the alias page, and the retention purge.
(Releasing through Postfix's hold queue: tests/test_quarantine_postfix.py.)"""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import select, update

from aliasd.core import aliases as core
from aliasd.core import oneclick, quarantine
from aliasd.models import Alias, MessageSample, QuarantinedMessage, SenderBlock, User
from aliasd.postfix.hold_queue import HoldQueue
from aliasd.scanner import build_scanner
from tests.harness.webapp import add_user, make_app, page_token, signed_in

SPAM = (b"From: winner@lottery.example\r\nTo: x.com@alice.example\r\nSubject: You won\r\n"
        b"Message-ID: <won@lottery.example>\r\n\r\nClaim your prize of one million dollars, "
        b"send your bank details today.\r\n")


@pytest.fixture
def world(settings, database):
    alice = add_user(database, "alice", domain="alice.example")
    add_user(database, "bob", domain="bob.example")
    add_user(database, "root", admin=True)
    with database.session() as s:
        alias = core.create_alias(s, "x.com@alice.example", s.get(User, alice), site="x.com")
        seen = quarantine.SeenMessage(
            owner_id=alice, alias_id=alias.id, alias_address=alias.address, queue_id="4XyZ1abcD",
            envelope_sender="winner@lottery.example", from_header="winner@lottery.example",
            subject="You won <b>big</b>", score=9.5, symbols="SUBJ_ALL_CAPS(3.00)[]", raw=SPAM)
        held = quarantine.record_hold(s, settings, seen, "Claim your prize <script>x</script>")
        sample = quarantine.keep_sample(s, settings, seen)
        ids = {"alias": alias.id, "held": held, "sample": sample.id}
    return make_app(settings), ids


def test_each_user_sees_only_their_held_messages_and_admins_see_all(world, database):
    app, ids = world
    alice, bob, root = (signed_in(app, n) for n in ("alice", "bob", "root"))
    page = alice.get("/quarantine/").get_data(as_text=True)
    assert "You won &lt;b&gt;big&lt;/b&gt;" in page and "winner@lottery.example" in page
    assert "You won" not in bob.get("/quarantine/").get_data(as_text=True)
    admin_page = root.get("/quarantine/").get_data(as_text=True)
    assert "You won" in admin_page and '<td data-label="Owner">alice</td>' in admin_page
    shown = alice.get(f"/quarantine/{ids['held']}").get_data(as_text=True)
    assert "Claim your prize &lt;script&gt;" in shown and "SUBJ_ALL_CAPS" in shown
    assert bob.get(f"/quarantine/{ids['held']}").status_code == 404
    token = page_token(bob, "/quarantine/")
    refused = bob.post(f"/quarantine/{ids['held']}/decide",
                       data={"action": "release", "csrf_token": token})
    assert refused.status_code == 404
    with database.session() as s:
        assert s.get(QuarantinedMessage, ids["held"]).state == "held"


def test_the_page_says_when_more_is_held_than_it_shows(world, database, monkeypatch):
    app, ids = world
    alice, bob = signed_in(app, "alice"), signed_in(app, "bob")
    assert 'id="held-more"' not in alice.get("/quarantine/").get_data(as_text=True)
    with database.session() as s:
        original = s.get(QuarantinedMessage, ids["held"])
        for n in range(2):
            s.add(QuarantinedMessage(**{
                c.name: getattr(original, c.name) for c in QuarantinedMessage.__table__.columns
                if c.name != "id"} | {"queue_id": f"4XyZ{n}more"}))
    monkeypatch.setattr(quarantine, "VISIBLE_AT_ONCE", 2)
    page = alice.get("/quarantine/").get_data(as_text=True)
    assert "The newest 2 of 3 held messages are shown" in page
    assert page.count('<tr id="held-') == 2
    assert 'id="held-more"' not in bob.get("/quarantine/").get_data(as_text=True)


def test_this_was_spam_on_the_alias_page_teaches_the_filter(world, settings, database):
    app, ids = world
    alice, bob = signed_in(app, "alice"), signed_in(app, "bob")
    page = alice.get(f"/aliases/{ids['alias']}").get_data(as_text=True)
    assert "Teach the spam filter" in page and "This was spam" in page
    token = page_token(alice, f"/aliases/{ids['alias']}")
    assert bob.post(f"/learn/{ids['sample']}", data={
        "verdict": "spam", "csrf_token": page_token(bob, "/")}).status_code == 404
    scanner = build_scanner(settings, database)
    before = scanner.stats().get("bayes_learned_spam", 0)
    done = alice.post(f"/learn/{ids['sample']}", data={"verdict": "spam", "csrf_token": token},
                      follow_redirects=True)
    assert "The filter learned this message as spam." in done.get_data(as_text=True)
    assert scanner.stats().get("bayes_learned_spam", 0) == before + 1
    with database.session() as s:
        assert s.get(MessageSample, ids["sample"]).learned_as == "spam"
    bad = alice.post(f"/learn/{ids['sample']}", data={"verdict": "maybe", "csrf_token": token})
    assert bad.status_code == 400


def test_purge_drops_old_learning_copies_but_keeps_those_of_held_messages(world, settings,
                                                                          database):
    _app, ids = world
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=settings.learn_keep_days + 1)
    with database.session() as s:
        result = quarantine.purge(s, HoldQueue(settings), settings, now=later)
    assert result.samples_dropped == 1 and result.held_deleted == 0
    with database.session() as s:
        assert s.get(MessageSample, ids["sample"]).raw is None
        held = s.get(QuarantinedMessage, ids["held"])
        assert held.state == "held" and s.get(MessageSample, held.sample_id).raw == SPAM
        # learning from a purged copy says so
        with pytest.raises(quarantine.InvalidTransition, match="already purged"):
            quarantine.learn_from(database, ids["sample"], lambda raw, spam: "learned",
                                  is_spam=True)


def test_quarantine_full_refuses_to_hold_more(settings, database):
    alice = add_user(database, "alice", domain="alice.example")
    tight = settings.with_overrides(quarantine_max_held=1)
    with database.session() as s:
        alias = core.create_alias(s, "y.com@alice.example", s.get(User, alice), site="y.com")
        seen = quarantine.SeenMessage(alice, alias.id, alias.address, "5QWERTy1", "a@b.example",
                                      None, "s", 7.0, "", b"Subject: s\r\n\r\nbody\r\n")
        quarantine.record_hold(s, tight, seen, "body")
        with pytest.raises(quarantine.QuarantineFull, match=r"quarantine full \(1 messages held\)"):
            quarantine.record_hold(s, tight, seen, "body")


def test_a_hold_records_the_row_and_its_learning_copy(settings, database):
    alice = add_user(database, "alice", domain="alice.example")
    small = settings.with_overrides(learn_sample_max_bytes=20)
    with database.session() as s:
        alias = core.create_alias(s, "z.com@alice.example", s.get(User, alice), site="z.com")
        seen = quarantine.SeenMessage(alice, alias.id, alias.address, "6ABCdef1", "a@b.example",
                                      "F" * 600, "S" * 600, 7.5, "X(1.00)[]", SPAM)
        first = quarantine.record_hold(s, small, seen, "the preview")
        second = quarantine.record_hold(s, small, seen, "another")
        alias_id = alias.id
    assert isinstance(first, int) and second > first
    with database.session() as s:
        row = s.get(QuarantinedMessage, first)
        sample = s.get(MessageSample, row.sample_id)
        assert (row.queue_id, row.owner_id, row.alias_id, row.alias_address) == (
            "6ABCdef1", alice, alias_id, "z.com@alice.example")
        assert (row.envelope_sender, row.from_header, row.subject) == (
            "a@b.example", "F" * 500, "S" * 500)
        assert (row.score, row.symbols, row.preview, row.state) == (
            7.5, "X(1.00)[]", "the preview", "held")
        assert row.held_at is not None and row.requested is None and row.decided_at is None
        assert (sample.owner_id, sample.alias_id, sample.alias_address, sample.queue_id) == (
            alice, alias_id, "z.com@alice.example", "6ABCdef1")
        assert (sample.envelope_sender, sample.from_header, sample.subject, sample.score,
                sample.symbols) == ("a@b.example", "F" * 500, "S" * 500, 7.5, "X(1.00)[]")
        assert sample.raw == SPAM[:20] and sample.at is not None and sample.learned_as is None
        assert s.get(QuarantinedMessage, second).sample_id != row.sample_id


def test_thresholds_hold_between_quarantine_and_reject_and_users_may_opt_out(settings):
    s = settings.with_overrides(quarantine_score=6.0)
    assert quarantine.holds(s, 6.0, None) and quarantine.holds(s, 14.9, None)
    assert not quarantine.holds(s, 5.9, None) and not quarantine.holds(s, 15.0, None)
    assert not quarantine.holds(s, 9.0, 0.0)  # the user turned it off
    assert quarantine.holds(s, 4.0, 3.0)  # the user holds from 3
    assert not quarantine.holds(settings, 9.0, None)  # off by default


@pytest.mark.parametrize("bad", ["ALL", "all", "-d", "../x", "ABC DEF", ""])
def test_hold_queue_refuses_anything_but_a_queue_id(settings, bad):
    from aliasd.postfix.hold_queue import HoldQueueError

    with pytest.raises(HoldQueueError, match="not a Postfix queue id"):
        HoldQueue(settings).release(bad)


def test_learning_mail_is_proven_like_a_reply_and_addressed_to_spam_or_ham_alone():
    from aliasd.core.learn_mailbox import learn_address
    from aliasd.core.reply_auth import SenderFacts, owner_proof

    nets = ["127.0.0.0/8", "2001:db8::/32"]

    def facts(client, auth=None, spf=None, dkim=()):
        return SenderFacts("alice@real.example", "alice@real.example", client, auth, spf,
                           frozenset(dkim))

    assert owner_proof(facts("127.0.0.1"), nets) and owner_proof(facts("2001:db8::5"), nets)
    assert owner_proof(facts("198.51.100.7", "alice"), nets)  # SMTP AUTH from anywhere
    assert owner_proof(facts("198.51.100.7", spf="real.example"), [])
    assert owner_proof(facts("198.51.100.7", dkim={"real.example"}), [])
    assert owner_proof(facts("198.51.100.7", dkim={"other.example"}), []) is None
    assert owner_proof(facts("198.51.100.7"), nets) is None
    assert owner_proof(facts(None), nets) is None and owner_proof(facts("junk"), nets) is None
    assert learn_address("SPAM@Example.NET").is_spam
    assert not learn_address("ham@example.net").is_spam
    assert learn_address("spam+x@example.net") is None and learn_address("spam") is None


def test_a_user_sets_their_own_quarantine_score_on_the_page(world, database):
    app, _ids = world
    alice = signed_in(app, "alice")
    token = page_token(alice, "/quarantine/")
    page = alice.post("/quarantine/threshold", data={"score": "4.5", "csrf_token": token},
                      follow_redirects=True).get_data(as_text=True)
    assert "Your mail scoring from 4.5 up to the reject score 15 is held here." in page
    page = alice.post("/quarantine/threshold", data={"score": "99", "csrf_token": token},
                      follow_redirects=True).get_data(as_text=True)
    assert "between 0 and the reject score 15" in page
    alice.post("/quarantine/threshold", data={"score": "0", "csrf_token": token})
    with database.session() as s:
        assert s.scalar(select(User.quarantine_score).where(User.username == "alice")) == 0
        assert s.scalar(select(User.quarantine_score).where(User.username == "bob")) is None


def test_a_quarantine_score_that_is_not_a_number_is_refused(world, database):
    """Python reads "nan" as a float; stored, it meant "never held" on PostgreSQL and
    "the server's setting" on SQLite (which stores NaN as NULL), after a "Saved."."""
    app, _ids = world
    alice = signed_in(app, "alice")
    token = page_token(alice, "/quarantine/")
    alice.post("/quarantine/threshold", data={"score": "4.5", "csrf_token": token},
               follow_redirects=True)
    for odd in ("nan", "-NaN", "inf"):
        page = alice.post("/quarantine/threshold", data={"score": odd, "csrf_token": token},
                          follow_redirects=True).get_data(as_text=True)
        assert "Saved." not in page and "between 0 and the reject score 15" in page, odd
        with database.session() as s:
            assert s.scalar(select(User.quarantine_score).where(User.username == "alice")) == 4.5


def test_every_held_message_is_in_exactly_one_digest_whenever_the_daily_run_starts(
        world, settings, database):
    # The timer starts the daily run at a random time within an hour (RandomizedDelaySec),
    # or at boot after a missed day: runs are not 24 hours apart.
    from aliasd.core import digest

    _app, ids = world
    with database.session() as s:
        held_at = s.get(QuarantinedMessage, ids["held"]).held_at
    first_run = held_at - dt.timedelta(minutes=20)  # the day before ran just before it
    with database.session() as s:
        assert digest.digests(s, settings, now=first_run) == []
    second_run = first_run + dt.timedelta(hours=24, minutes=40)  # later in the hour
    with database.session() as s:
        [mail] = digest.digests(s, settings, now=second_run)
        assert "You won <b>big</b>" in mail.message.get_content()
        digest.mark_sent(s, mail, now=second_run)
    with database.session() as s:  # in a digest once: not again the next day
        assert digest.digests(s, settings, now=second_run + dt.timedelta(hours=23)) == []


def test_cli_sets_and_shows_a_users_quarantine_score(settings, database):
    from tests.harness.cli import run_cli_in_process, settings_env

    add_user(database, "carol")
    env = settings_env(settings)
    env["ALIASD_QUARANTINE_SCORE"] = "8"
    shown = run_cli_in_process(env, ("quarantine", "threshold", "carol"))
    assert shown.stdout.strip() == "carol: held from score 8 (server default)"
    done = run_cli_in_process(env, ("quarantine", "threshold", "carol", "0"))
    assert done.stdout.strip() == "carol: never held (own setting)"
    bad = run_cli_in_process(env, ("quarantine", "threshold", "carol", "20"))
    assert bad.returncode == 1 and "between 0 and the reject score 15" in bad.stderr
    listed = run_cli_in_process(env, ("quarantine", "list", "--user", "carol", "--json"))
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"
    nobody = run_cli_in_process(env, ("quarantine", "list", "--user", "nobody"))
    assert nobody.returncode == 1 and "nobody" in nobody.stderr
    missing = run_cli_in_process(env, ("quarantine", "release", "424242"))
    assert missing.returncode == 1 and "no quarantined message 424242" in missing.stderr


def test_cli_lists_one_users_held_messages(world, settings):
    import json

    from tests.harness.cli import run_cli_in_process, settings_env

    env = settings_env(settings)
    alice = run_cli_in_process(env, ("quarantine", "list", "--user", "alice", "--json"))
    assert [r["subject"] for r in json.loads(alice.stdout)] == ["You won <b>big</b>"]
    bob = run_cli_in_process(env, ("quarantine", "list", "--user", "bob", "--json"))
    assert json.loads(bob.stdout) == []
    text = run_cli_in_process(env, ("quarantine", "list"))
    assert "x.com@alice.example  from winner@lottery.example  You won <b>big</b>" in text.stdout


def _one_click_links(settings, alias) -> dict[str, str]:
    """The links forwarded mail to ``alias`` carries, made as the milter makes them."""
    from aliasd.core.events import AliasTarget
    from aliasd.milter.oneclick_headers import HEADER_BLOCK, HEADER_DISABLE, headers_for
    from aliasd.milter.processing import Envelope

    target = AliasTarget(id=alias.id, address=alias.address, owner_id=alias.owner_id,
                         site=alias.site, state=alias.state)
    added = dict(headers_for(settings, Envelope(sender="news@shop.example"), [target]))
    return {"disable": added[HEADER_DISABLE].strip("<>").rsplit("/oneclick/", 1)[1],
            "block": added[HEADER_BLOCK].strip("<>").rsplit("/oneclick/", 1)[1]}


def _same_id_for_another_user(database, old_id: int) -> None:
    """Bob's next alias gets the number of alice's forgotten one, as SQLite does by itself
    (a deleted highest rowid is handed out again); on PostgreSQL the test sets it."""
    with database.session() as s:
        alias = core.create_alias(s, "bank.example@bob.example", core.get_user(s, "bob"),
                                  site="bank.example")
        s.flush()
        if alias.id != old_id:
            s.execute(update(Alias).where(Alias.id == alias.id).values(id=old_id))


def test_a_one_click_link_acts_only_on_the_alias_its_mail_came_to(settings, database):
    """Whoever keeps a forwarded message holds its links for weeks. When its alias is
    forgotten and its number goes to another user's new alias, the links do nothing."""
    settings = settings.with_overrides(web_base_url="https://aliases.example")
    add_user(database, "alice", domain="alice.example")
    add_user(database, "bob", domain="bob.example")
    with database.session() as s:
        alias = core.create_alias(s, "x.com@alice.example", core.get_user(s, "alice"),
                                  site="x.com")
        s.flush()
        old_id, links = alias.id, _one_click_links(settings, alias)
        # a link from before links named their alias: only the number and the time
        legacy = oneclick.make_token(settings, oneclick.OneClick(oneclick.DISABLE, alias.id))
    with database.session() as s:
        core.forget(s, s.get(Alias, old_id))
    time.sleep(1.1)  # a link's time is in whole seconds
    _same_id_for_another_user(database, old_id)

    client = make_app(settings).test_client()
    for token in (links["disable"], links["block"], legacy):
        shown = client.get(f"/oneclick/{token}").get_data(as_text=True)
        assert "bank.example@bob.example" not in shown
        page = client.post(f"/oneclick/{token}", data={"List-Unsubscribe": "One-Click"})
        assert page.status_code == 409
        assert "this alias no longer exists" in page.get_data(as_text=True)
    with database.session() as s:
        assert s.get(Alias, old_id).address == "bank.example@bob.example"
        assert s.get(Alias, old_id).state == "active"
        assert s.scalars(select(SenderBlock)).all() == []


def test_a_one_click_link_still_acts_on_its_own_alias(settings, database):
    settings = settings.with_overrides(web_base_url="https://aliases.example")
    add_user(database, "alice", domain="alice.example")
    with database.session() as s:
        alias = core.create_alias(s, "x.com@alice.example", core.get_user(s, "alice"),
                                  site="x.com")
        s.flush()
        alias_id, links = alias.id, _one_click_links(settings, alias)
        legacy = oneclick.make_token(settings, oneclick.OneClick(oneclick.DISABLE, alias.id))
    client = make_app(settings).test_client()
    shown = client.get(f"/oneclick/{links['block']}").get_data(as_text=True)
    assert "Block news@shop.example for the alias x.com@alice.example" in shown
    done = client.post(f"/oneclick/{links['block']}")
    assert done.status_code == 200
    assert "news@shop.example is blocked for x.com@alice.example" in done.get_data(as_text=True)
    done = client.post(f"/oneclick/{legacy}", data={"List-Unsubscribe": "One-Click"})
    assert "x.com@alice.example is disabled" in done.get_data(as_text=True)
    with database.session() as s:
        assert s.get(Alias, alias_id).state == "disabled"

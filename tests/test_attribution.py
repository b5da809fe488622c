"""Which senders are a site's own, and what makes a leak: the rule (pure) and what the
mail path keeps of it (known senders, leak evidence, the user's word), on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from aliasd.core import aliases as core
from aliasd.core import attribution, blocking, events, leaks
from aliasd.models import Alias, SiteKnownSender

AFF = attribution.affiliations()


def judge(site, from_domain, envelope=None, *, spam=False, known=None, new=False, **kw):
    return attribution.attribute(
        site=site, from_domain=from_domain, envelope_domain=envelope, is_spam=spam,
        known=known or {}, affiliated=AFF, learn_eligible=new, **kw,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("site", "sender", "source"),
    [
        ("github.com", "noreply.github.com", "site"),
        ("stackoverflow.com", "stackoverflow.email", "name"),
        ("quora.com", "quoramail.com", "name"),
        ("facebook.com", "facebookmail.com", "affiliation"),
        ("reddit.com", "redditmail.com", "name"),
        ("paypal.com", "mail.paypal.de", "name"),
        ("dhl.com", "mail.dhl.de", "name"),
        ("twitter.com", "x.com", "affiliation"),
        ("bitbucket.org", "atlassian.com", "affiliation"),
        ("steamcommunity.com", "store.steampowered.com", "affiliation"),
        ("cash.app", "square.com", "affiliation"),
        ("americanexpress.com", "welcome.aexp.com", "affiliation"),
        ("wsj.com", "dowjones.com", "affiliation"),
        ("accounts.shop.co.uk", "email.shop.co.uk", "site"),
    ],
)
def test_a_sites_own_senders_are_recognised(site, sender, source):
    verdict = judge(site, sender, "bounces+123@sendgrid.net".rpartition("@")[2])
    assert verdict.related and verdict.source == source


@pytest.mark.parametrize(
    ("site", "sender"),
    [
        ("paypal.com", "paypal-account-verify.com"),
        ("amazon.com", "amazon-refunds-center.net"),
        ("paypal.com", "paypal.de"),  # even the real name, when the mail is spam: no name match
        ("apple.com", "appleid-support.com"),
    ],
)
def test_look_alikes_scored_as_spam_are_leak_evidence(site, sender):
    verdict = judge(site, sender, spam=True)
    assert not verdict.related
    assert verdict.sender == attribution.registrable_domain(sender)


def test_hyphenated_or_long_look_alikes_never_match_by_name_even_when_clean():
    for sender in ("paypal-account-verify.com", "secure-paypal.com", "amazon2refund.net",
                   "paypalaccountverification.com"):
        assert not judge("paypal.com" if "paypal" in sender else "amazon.com", sender).related


def test_short_brands_must_match_exactly():
    assert not judge("max.com", "maxbet.com").related
    assert not judge("ing.com", "shopping.com").related
    assert judge("ing.com", "ing.de").related


def test_from_is_the_identity_an_esp_envelope_does_not_make_mail_unrelated():
    verdict = judge("github.com", "github.com", "amazonses.com")
    assert verdict.related and verdict.sender == "github.com"
    # the site's own bounce domain with a partner's From: still the site's mail
    assert judge("shop.example", "partner.example", "bounce.shop.example").related
    # an ESP envelope never stands in for a missing site From:
    assert not judge("github.com", "spammer.example", "sendgrid.net").related


def test_learned_first_mail_only_when_clean_and_new():
    first = judge("newsite.example", "mailer-newsite.example", new=True)
    assert first.related and first.source == first.learn == "learned"
    assert not judge("newsite.example", "mailer-newsite.example", new=True, spam=True).related
    assert not judge("newsite.example", "mailer-newsite.example", new=False).related
    signed = judge("newsite.example", "mailer-newsite.example", new=True,
                   dkim_pass_domains=("mailer-newsite.example",), dkim_checked=True)
    assert signed.source == signed.learn == "authenticated"


def test_a_large_mail_provider_is_never_learned_as_a_sites_sender():
    providers = frozenset({"gmail.com", "hotmail.com"})
    first = judge("newsite.example", "hotmail.com", new=True, shared_providers=providers)
    assert first.related and first.learn is None and first.source is None  # no leak evidence either
    assert "large mail provider" in first.why
    later = judge("newsite.example", "hotmail.com", spam=True, shared_providers=providers)
    assert not later.related  # so spam from there still counts against the site
    # a provider's name or the site's own domain still decide first
    assert judge("gmail.com", "gmail.com", new=True, shared_providers=providers).source == "site"


def test_known_senders_count_and_forged_spam_does_not():
    assert judge("shop.example", "partner.example", known={"partner.example": "user"}).related
    forged = judge("paypal.com", "paypal.com", spam=True, dkim_checked=True)
    assert not forged.related and "forged" in forged.why
    signed = judge("paypal.com", "paypal.com", spam=True, dkim_checked=True,
                   dkim_pass_domains=("paypal.com",))
    assert signed.related  # the site itself sent it (its own spam is not a leak)


@pytest.mark.parametrize(
    ("from_domain", "envelope"),
    [(None, None), ("", ""), ("co.uk", None), ("192.0.2.1", None), ("[192.0.2.1]", "x"),
     ("xn--bcher-kva.example", None), ("bücher.example", None), ("\udcff.example", None),
     ("a" * 300 + ".example", None)],
)
def test_bad_sender_domains_never_crash(from_domain, envelope):
    verdict = judge("shop.example", from_domain, envelope)
    assert isinstance(verdict.related, bool)


def test_admin_affiliations_file_extends_the_shipped_list(tmp_path):
    extra = tmp_path / "aff.txt"
    extra.write_text("# ours\nshop.example  shopmail-partner.example\n")
    aff = attribution.affiliations(str(extra))
    assert "shopmail-partner.example" in aff["shop.example"]
    assert "x.com" in aff["twitter.com"]  # the shipped list still applies


# --- the mail path, both engines ------------------------------------------------------------
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def world(database):
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@mailbox.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "booking@example.net", alice, site="booking.example")
        core.create_alias(s, "paypal@example.net", alice, site="paypal.com")
    return database


def send(db, settings, rcpt, sender, from_domain, *, spam=False, subject="hi", minutes=1):
    with db.session() as s:
        tgt = events.find_aliases(s, [rcpt], "+")
    facts = events.MessageFacts(sender, from_domain=from_domain, subject=subject,
                                at=NOW + dt.timedelta(minutes=minutes))
    outcome = events.AppliedVerdict(score=9.5 if spam else 0.5,
                             action="add header" if spam else "no action", is_spam=spam)
    events.record_and_notify(db, settings, tgt, facts, outcome)


def status(db, site):
    """The site's status from its evidence rows; the report's per-site summary (kept by
    the mail path and every user action) must say the same."""
    with db.session() as s:
        owner = s.scalar(select(Alias.owner_id).where(Alias.site == site).limit(1))
        full = leaks.site_status(s, owner, site, 3)
        summary = leaks.statuses(s, [(owner, site)], 3).get((owner, site))
        if summary is None:
            assert full.status == "clean"
        else:
            assert (summary.status, summary.reason, summary.since, summary.senders) == (
                full.status, full.reason, full.since, full.senders)
        return full


def test_first_mail_is_learned_then_a_partner_is_shared_and_spam_is_a_leak(world, settings):
    send(world, settings, "booking@example.net", "b@em.bkng-notify.example", "bkng-notify.example")
    with world.session() as s:
        known = {(k.domain, k.source) for k in s.scalars(select(SiteKnownSender))}
    assert known == {("bkng-notify.example", "learned")}
    send(world, settings, "booking@example.net", "b@em.bkng-notify.example", "bkng-notify.example",
         minutes=60)
    assert status(world, "booking.example").status == "clean"
    send(world, settings, "booking@example.net", "r@hotel-alpina.example", "hotel-alpina.example",
         subject="Your stay", minutes=120)
    shared = status(world, "booking.example")
    assert shared.status == "shared" and "hotel-alpina.example" in shared.reason
    send(world, settings, "booking@example.net", "x@pills.example", "pills.example", spam=True,
         subject="cheap pills", minutes=180)
    leaked = status(world, "booking.example")
    assert leaked.status == "leaked"
    assert leaked.evidence.sender_domain == "pills.example"
    assert "cheap pills" in leaked.reason and "score 9.5" in leaked.reason


def test_spam_from_a_mail_provider_after_a_clean_first_message_from_there_is_a_leak(world, settings):
    # the first message, scored clean, comes from hotmail.com (autoblock_exempt_domains):
    # storing it as the site's sender would excuse all later hotmail spam
    send(world, settings, "booking@example.net", "deals@hotmail.com", "hotmail.com")
    with world.session() as s:
        assert not list(s.scalars(select(SiteKnownSender)))
    assert status(world, "booking.example").status == "clean"
    send(world, settings, "booking@example.net", "pills4u@hotmail.com", "hotmail.com", spam=True,
         subject="cheap pills", minutes=30)
    leaked = status(world, "booking.example")
    assert leaked.status == "leaked" and leaked.evidence.sender_domain == "hotmail.com"


def test_look_alike_phishing_to_a_paypal_alias_is_a_leak(world, settings):
    send(world, settings, "paypal@example.net", "service@paypal.de", "paypal.de")
    send(world, settings, "paypal@example.net", "x@mail.paypal-account-verify.com",
         "paypal-account-verify.com", spam=True, subject="Verify your account", minutes=5)
    st = status(world, "paypal.com")
    assert st.status == "leaked" and st.evidence.sender_domain == "paypal-account-verify.com"
    assert "look-alike" in st.evidence.evidence_why


def test_several_clean_unrelated_senders_are_a_leak(world, settings):
    send(world, settings, "booking@example.net", "b@booking.example", "booking.example")
    for i, partner in enumerate(("deals-one.example", "promo-two.example", "offers-three.example")):
        send(world, settings, "booking@example.net", f"n@{partner}", partner, minutes=10 + i)
    st = status(world, "booking.example")
    assert st.status == "leaked" and st.senders == 3 and "3 unrelated senders" in st.reason


def test_dismissal_makes_the_sender_known_and_is_remembered_and_undo_restores(world, settings):
    send(world, settings, "booking@example.net", "b@booking.example", "booking.example")
    send(world, settings, "booking@example.net", "x@newsletter.example", "newsletter.example",
         spam=True, minutes=5)
    assert status(world, "booking.example").status == "leaked"
    with world.session() as s:
        owner = s.scalar(select(Alias.owner_id).limit(1))
        leaks.dismiss_leak(s, owner, "booking.example", "newsletter.example")
    assert status(world, "booking.example").status == "clean"
    # later mail from it is the site's now: no new evidence
    send(world, settings, "booking@example.net", "x@newsletter.example", "newsletter.example",
         spam=True, minutes=10)
    assert status(world, "booking.example").status == "clean"
    with world.session() as s:
        row = leaks.site_evidence(s, owner, "booking.example")[0]
        assert row.dismissed_at is not None and row.total == 1  # remembered, not counted again
        assert leaks.known_senders(s, owner, "booking.example")["newsletter.example"] == "user"
        assert leaks.remove_known_sender(s, owner, "booking.example", "newsletter.example")
    assert status(world, "booking.example").status == "leaked"


def test_confirming_a_shared_sender_makes_it_a_leak(world, settings):
    send(world, settings, "booking@example.net", "b@booking.example", "booking.example")
    send(world, settings, "booking@example.net", "r@hotel.example", "hotel.example", minutes=5)
    assert status(world, "booking.example").status == "shared"
    with world.session() as s:
        owner = s.scalar(select(Alias.owner_id).limit(1))
        leaks.confirm_leak(s, owner, "booking.example", "hotel.example")
    st = status(world, "booking.example")
    assert st.status == "leaked" and st.reason.startswith("You confirmed")


def test_the_users_word_cannot_make_a_served_or_mailbox_domain_a_sites_sender(world, settings):
    """Spam forges the server's own domains and the user's mailbox domain; stored as a
    site's sender, that spam would never count as leak evidence again."""
    from aliasd.core.addresses import AddressError

    with world.session() as s:
        owner = s.scalar(select(Alias.owner_id).limit(1))
        for domain in ("example.net", "x@mailbox.example", "a b@partner.example", "<b>x</b>"):
            with pytest.raises(AddressError) as refused:
                leaks.add_known_sender(s, owner, "booking.example", domain)
            assert domain[:10] in str(refused.value) or "serves" in str(refused.value)
        assert "serves or your own mailbox domain" in str(
            pytest.raises(AddressError, leaks.add_known_sender, s, owner, "booking.example",
                          "news@Example.NET").value)  # fmt: skip
        assert leaks.add_known_sender(s, owner, "booking.example", "a@mail.partner.example").domain == (
            "partner.example")
        s.commit()
    # forged spam "from" the served domain: dismissed as not a leak, it stays unknown
    send(world, settings, "booking@example.net", "x@example.net", "example.net", spam=True)
    assert status(world, "booking.example").status == "leaked"
    with world.session() as s:
        leaks.dismiss_leak(s, owner, "booking.example", "example.net")
        assert "example.net" not in leaks.known_senders(s, owner, "booking.example")
        s.commit()
    assert status(world, "booking.example").status == "clean"


def test_auto_block_never_targets_a_known_sender_of_the_users_sites(world, settings):
    settings = settings.with_overrides(autoblock_threshold=2, blocklist_reload_command="")
    with world.session() as s:
        owner = s.scalar(select(Alias.owner_id).limit(1))
        leaks.add_known_sender(s, owner, "booking.example", "partnermail.example")
    for i in range(3):  # spam "from" the user's confirmed sender and from the paypal brand
        send(world, settings, "booking@example.net", "x@partnermail.example",
             "partnermail.example", spam=True, minutes=i)
        send(world, settings, "paypal@example.net", "x@news.paypal.com", "paypal.com",
             spam=True, minutes=i)
        send(world, settings, "paypal@example.net", "x@mailbox.example", "mailbox.example",
             spam=True, minutes=i)
        send(world, settings, "paypal@example.net", "x@spam-cannon.example",
             "spam-cannon.example", spam=True, minutes=i)
    with world.session() as s:
        blocked = set(blocking.blocked_domains(s))
    assert blocked == {"spam-cannon.example"}

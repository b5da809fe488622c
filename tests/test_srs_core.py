"""Unit tests of aliasd.core.srs: signing, verification, rotation, expiry, policy."""

from __future__ import annotations

import re

import pytest

from aliasd.config import load_settings
from aliasd.core.decision import LookupOutcome
from aliasd.core.srs import (
    SrsConfig,
    SrsConfigError,
    SrsRefused,
    SrsRewriter,
    is_srs_local_part,
)

DAY = 86400.0
T0 = 1_780_000_000.0  # a fixed "now"; every test sets its own clock


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rewriter(secrets=("new-secret",), *, clock=None, **kw) -> SrsRewriter:
    config = SrsConfig.build(domain="fwd.example.net", secrets=secrets, **kw)
    return SrsRewriter(config, clock=clock or Clock())


SRS0 = re.compile(r"^SRS0=([^=]+)=([A-Z2-7]{2})=bank\.example=alice@fwd\.example\.net$")


def test_forward_makes_srs0_and_reverse_returns_original():
    r = rewriter()
    srs = r.forward("alice@bank.example")
    assert srs is not None and SRS0.match(srs), srs
    assert r.reverse(srs) == "alice@bank.example"
    decision, reason = r.reverse_decision(srs)
    assert decision.outcome is LookupOutcome.FOUND and decision.value == "alice@bank.example"
    assert reason is None


def test_forward_normalises_domain_and_keeps_local_case():
    srs = rewriter().forward("<Alice@BANK.Example>")
    assert srs is not None and "=bank.example=Alice@fwd.example.net" in srs


@pytest.mark.parametrize("length", [4, 8, 16])
def test_hash_length_is_configurable(length):
    srs = rewriter(hash_length=length).forward("alice@bank.example")
    assert len(SRS0.match(srs).group(1)) == length


def test_rotation_first_secret_signs_all_verify():
    old = rewriter(secrets=["old"])
    signed_with_old = old.forward("alice@bank.example")
    rotated = rewriter(secrets=["new", "old"])
    # Bounces to addresses handed out before the rotation still reverse.
    assert rotated.reverse(signed_with_old) == "alice@bank.example"
    # New addresses are signed with the first secret only: the old one alone refuses them.
    signed_now = rotated.forward("alice@bank.example")
    assert signed_now != signed_with_old
    assert rewriter(secrets=["new"]).reverse(signed_now) == "alice@bank.example"
    with pytest.raises(SrsRefused, match="does not verify"):
        rewriter(secrets=["old"]).reverse(signed_now)
    # Once the old secret is dropped, its addresses are refused.
    with pytest.raises(SrsRefused, match="does not verify"):
        rewriter(secrets=["new"]).reverse(signed_with_old)


def test_expiry_with_injected_clock():
    clock = Clock()
    r = rewriter(clock=clock, max_age_days=3)
    srs = r.forward("alice@bank.example")
    clock.now = T0 + 2 * DAY  # within the window (days 0, 1, 2)
    assert r.reverse(srs) == "alice@bank.example"
    clock.now = T0 + 3 * DAY
    with pytest.raises(SrsRefused, match="expired"):
        r.reverse(srs)
    decision, reason = r.reverse_decision(srs)
    assert decision.outcome is LookupOutcome.NOTFOUND and "expired" in reason
    # A stamp from the future (clock set back) is refused too.
    clock.now = T0 - 2 * DAY
    with pytest.raises(SrsRefused, match="expired"):
        r.reverse(srs)


def test_tampering_is_refused():
    r = rewriter(hash_length=6)
    srs = r.forward("alice@bank.example")
    h, ts = SRS0.match(srs).groups()
    tampered = [
        srs.replace("=alice@", "=mallory@"),  # another victim
        srs.replace("=bank.example=", "=evil.example="),  # another domain
        srs.replace(f"={ts}=", "=AA=" if ts != "AA" else "=AB="),  # another day
        srs.replace(f"={h}=", "=" + ("B" if h[0] != "B" else "C") + h[1:] + "="),  # another hash
    ]
    for address in tampered:
        assert address != srs
        with pytest.raises(SrsRefused):
            r.reverse(address)
        decision, reason = r.reverse_decision(address)
        assert decision.outcome is LookupOutcome.NOTFOUND and reason


def test_hash_is_case_insensitive_per_spec():
    r = rewriter(hash_length=8)
    srs = r.forward("alice@bank.example")
    h = SRS0.match(srs).group(1)
    for variant in (srs.lower(), srs.upper(), srs.replace(h, h.swapcase())):
        assert r.reverse(variant).lower() == "alice@bank.example"


def test_short_hash_prefix_is_refused():
    # srslib alone accepts any prefix of the right hash; a 1-character guess must fail.
    r = rewriter(hash_length=6)
    srs = r.forward("alice@bank.example")
    h = SRS0.match(srs).group(1)
    short = srs.replace(f"={h}=", f"={h[:2]}=")
    with pytest.raises(SrsRefused, match="too short"):
        r.reverse(short)


def test_local_and_excluded_senders_are_untouched():
    r = rewriter(exclude_domains=["partner.example", ".corp.example"])
    managed = {"example.net", "alias.example"}
    assert r.forward("bob@example.net", managed) is None  # a managed alias domain
    assert r.forward("bob@ALIAS.example", managed) is None
    assert r.forward("bob@fwd.example.net", managed) is None  # the SRS domain itself
    assert r.forward("bob@partner.example", managed) is None
    assert r.forward("bob@mail.corp.example", managed) is None  # ".corp.example": subdomains
    assert r.forward("bob@notcorp.example", managed) is not None
    assert r.forward("bob@partner.example.org", managed) is not None
    # Our own SRS senders are never rewritten twice.
    once = r.forward("alice@bank.example", managed)
    assert r.forward(once, managed) is None
    assert r.forward_decision("bob@example.net", managed).outcome is LookupOutcome.NOTFOUND
    found = r.forward_decision("alice@bank.example", managed)
    assert found.outcome is LookupOutcome.FOUND and found.value.startswith("SRS0=")


@pytest.mark.parametrize(
    "key",
    ["", "no-at-sign", "@bank.example", "a b@bank.example", 'x"y@bank.example',
     "alice@", "alice@bad..domain", "alice@bänk\x00.example", "ü@bank.example"],
)  # fmt: skip
def test_malformed_senders_are_not_rewritten(key):
    r = rewriter()
    assert r.forward(key) is None
    assert r.forward_decision(key).outcome is LookupOutcome.NOTFOUND


def test_overlong_result_is_not_rewritten():
    r = rewriter()
    long_domain = ".".join(["a" * 60] * 3) + ".example"
    assert r.forward(f"{'x' * 64}@{long_domain}") is None
    assert r.forward(f"x@{long_domain}") is not None


def test_srs1_rules_for_senders_from_other_forwarders():
    r = rewriter()
    hop1 = "SRS0=abcd=AB=orig.example=joe@hop1.example"
    srs1 = r.forward(hop1)
    assert srs1.startswith("SRS1=") and srs1.endswith("=hop1.example==abcd=AB=orig.example=joe@fwd.example.net")
    # The bounce goes back to the first hop, which checks its own hash and stamp.
    assert r.reverse(srs1) == hop1
    # An SRS1 sender from a later hop keeps the first hop and gets our hash.
    other = rewriter(secrets=["someone-else"]).forward(hop1).replace("fwd.example.net", "hop2.example")
    again = r.forward(other)
    assert again.startswith("SRS1=") and "=hop1.example==abcd=AB=orig.example=joe@fwd.example.net" in again
    assert r.reverse(again) == hop1
    tampered = srs1.replace("=hop1.example=", "=evil.example=")
    with pytest.raises(SrsRefused):
        r.reverse(tampered)


def test_reverse_only_concerns_srs_addresses_at_our_domain():
    r = rewriter()
    srs = r.forward("alice@bank.example")
    elsewhere = srs.replace("@fwd.example.net", "@other.example")
    not_srs = ("github.com@example.net", "alice@fwd.example.net", "SRS0@fwd.example.net", elsewhere, "", "x")
    for address in not_srs:
        decision, reason = r.reverse_decision(address)
        assert decision.outcome is LookupOutcome.NOTFOUND and reason is None
    assert r.is_srs_recipient(srs) and r.is_srs_recipient(srs.lower())
    assert not r.is_srs_recipient(elsewhere)
    for garbage in ("SRS0=@fwd.example.net", "SRS0=abcd@fwd.example.net",
                    "srs1=zzzz=x@fwd.example.net"):  # fmt: skip
        decision, reason = r.reverse_decision(garbage)
        assert decision.outcome is LookupOutcome.NOTFOUND and reason


def test_is_srs_local_part():
    assert is_srs_local_part("SRS0=abc=AB=x=y") and is_srs_local_part("srs1=abc")
    # We only ever sign with "=" (as the replica's catch-all guard assumes).
    assert not is_srs_local_part("srs1+abc") and not is_srs_local_part("srs0-abc")
    assert not is_srs_local_part("srs0") and not is_srs_local_part("github.com")


def test_config_from_settings_and_errors():
    settings = load_settings(
        environ={"ALIASD_SRS_DOMAIN": "Fwd.Example.NET", "ALIASD_SRS_SECRETS": "a, b",
                 "ALIASD_SRS_EXCLUDE_DOMAINS": ".Corp.example,partner.example"},
    )  # fmt: skip
    config = SrsConfig.from_settings(settings)
    assert config.domain == "fwd.example.net"
    assert config.secrets == ("a", "b")
    assert config.exclude_domains == (".corp.example", "partner.example")
    assert SrsConfig.from_settings(load_settings(environ={})) is None
    with pytest.raises(SrsConfigError, match="srs_domain"):
        SrsConfig.build(domain="not a domain", secrets=["a"])
    with pytest.raises(SrsConfigError, match="srs_secrets"):
        SrsConfig.build(domain="fwd.example.net", secrets=["", " "])
    with pytest.raises(SrsConfigError, match="srs_hash_length"):
        SrsConfig.build(domain="fwd.example.net", secrets=["a"], hash_length=2)
    with pytest.raises(SrsConfigError, match="srs_hash_length"):
        SrsConfig.build(domain="fwd.example.net", secrets=["a"], hash_length=28)
    with pytest.raises(SrsConfigError, match="srs_max_age_days"):
        SrsConfig.build(domain="fwd.example.net", secrets=["a"], max_age_days=0)
    with pytest.raises(SrsConfigError, match="srs_exclude_domains"):
        SrsConfig.build(domain="fwd.example.net", secrets=["a"], exclude_domains=["x y"])

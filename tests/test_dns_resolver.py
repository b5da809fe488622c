"""aliasd's one resolver reaches the tests' own DNS server: TXT (long, split), MX, A,
NXDOMAIN and a name that never answers (a temporary failure, not a crash)."""

from __future__ import annotations

import time

import pytest

from aliasd.config import SettingsError, load_settings
from aliasd.mailauth import dns as adns


def _settings(tmp_path, address: str, timeout: float = 5.0):
    return load_settings(environ={"ALIASD_DNS_RESOLVER": address}, data_dir=str(tmp_path),
                         dns_timeout=timeout)  # fmt: skip


def test_txt_mx_and_a_records_come_from_the_configured_resolver(tmp_path, dns_server):
    long_value = "v=DKIM1; k=rsa; p=" + "A" * 400
    dns_server.add("sel._domainkey.example.org", "TXT", long_value)
    dns_server.add("example.org", "MX", "10 mx.example.org.")
    dns_server.add("mx.example.org", "A", "192.0.2.7")
    settings = _settings(tmp_path, dns_server.address)
    assert adns.txt(settings, "sel._domainkey.example.org") == [long_value.encode()]
    assert [r.exchange.to_text() for r in adns.query(settings, "example.org", "MX")] == [
        "mx.example.org."
    ]
    assert [r.address for r in adns.query(settings, "mx.example.org", "A")] == ["192.0.2.7"]
    assert adns.txt(settings, "missing.example.org") == []
    assert ("sel._domainkey.example.org", "TXT") in dns_server.queries


def test_a_resolver_that_never_answers_is_a_temporary_failure(tmp_path, dns_server):
    dns_server.add("slow.example.org", "TXT", "x")
    dns_server.silent.add("slow.example.org")
    settings = _settings(tmp_path, dns_server.address)
    started = time.monotonic()
    with pytest.raises(adns.DnsTemporaryError):
        adns.txt(settings, "slow.example.org", timeout=1.0)
    assert time.monotonic() - started < 3


def test_pyspf_shaped_lookup_uses_the_same_resolver(tmp_path, dns_server):
    dns_server.add("example.org", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    lookup = adns.spf_lookup(_settings(tmp_path, dns_server.address))
    assert lookup("example.org", "TXT") == [
        (("example.org", "TXT"), [b"v=spf1 ip4:192.0.2.0/24 -all"])
    ]


def test_resolver_address_forms():
    assert adns.parse_resolver_address("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert adns.parse_resolver_address("10.0.0.1") == ("10.0.0.1", 53)
    assert adns.parse_resolver_address("[::1]:53") == ("::1", 53)


def test_a_malformed_resolver_address_is_refused_with_the_setting_named(tmp_path):
    with pytest.raises(SettingsError, match="dns_resolver"):
        _settings(tmp_path, "127.0.0.1:port")


def _asked(dns_server, name: str, rtype: str) -> int:
    return sum(1 for q in dns_server.queries if q == (name, rtype))


def test_answers_are_kept_for_their_ttl_and_asked_again_after(tmp_path):
    from tests.harness.dns import DnsServer

    server = DnsServer(ttl=1).start()
    try:
        settings = _settings(tmp_path, server.address)
        server.add("cached.example.org", "TXT", "v=spf1 -all")
        for _ in range(3):
            assert adns.txt(settings, "cached.example.org") == [b"v=spf1 -all"]
        assert _asked(server, "cached.example.org", "TXT") == 1
        # a name that does not exist: kept for the SOA's TTL too (RFC 2308)
        for _ in range(3):
            assert adns.txt(settings, "nowhere.example.org") == []
        assert _asked(server, "nowhere.example.org", "TXT") == 1
        server.set("cached.example.org", "TXT", ["v=spf1 mx -all"])
        time.sleep(1.1)
        assert adns.txt(settings, "cached.example.org") == [b"v=spf1 mx -all"]
        assert _asked(server, "cached.example.org", "TXT") == 2
    finally:
        server.stop()


def test_a_zero_ttl_is_never_cached(tmp_path, dns_server):
    settings = _settings(tmp_path, dns_server.address)
    dns_server.add("fresh.example.org", "TXT", "one")
    assert adns.txt(settings, "fresh.example.org") == [b"one"]
    dns_server.set("fresh.example.org", "TXT", ["two"])
    assert adns.txt(settings, "fresh.example.org") == [b"two"]
    assert adns.txt(settings, "gone.example.org") == adns.txt(settings, "gone.example.org") == []
    assert _asked(dns_server, "gone.example.org", "TXT") == 2


def test_the_answer_cache_is_bounded_and_drops_the_least_recently_used():
    cache = adns.AnswerCache(size=3)
    for i in range(3):
        cache.put(("r", f"n{i}", "TXT"), [i], 60, now=0)
    assert cache.get(("r", "n0", "TXT"), now=1) == [0]  # n0 used: n1 is now the oldest
    cache.put(("r", "n3", "TXT"), [3], 60, now=1)
    assert len(cache) == 3 and cache.get(("r", "n1", "TXT"), now=1) is None
    assert cache.get(("r", "n0", "TXT"), now=61) is None  # expired

"""``aliasd dns DOMAIN`` prints what to publish; served by the tests' DNS server, the
same records satisfy ``aliasd doctor``'s DNS checks; missing ones fail with the fix, and
an unreachable resolver is a warning."""

from __future__ import annotations

import pytest

from aliasd.doctor import domain_checks

HOST = "mx.aliasd.test"


@pytest.fixture
def published(aliasd_cli, dns_settings, dns_server):
    env = {"ALIASD_AUTHSERV_ID": HOST, "ALIASD_DNS_RESOLVER": dns_server.address}
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example", env_extra=env)
    aliasd_cli("domain", "add", "mail.example", "--owner", "bob", env_extra=env)
    zone = aliasd_cli("dns", "mail.example", env_extra=env).stdout
    dns_server.add_zone_lines(zone)
    dns_server.add(HOST, "A", "192.0.2.25")
    return dns_settings.with_overrides(authserv_id=HOST), zone


def test_the_zone_lists_mx_spf_dkim_and_a_starting_dmarc_policy(published):
    _, zone = published
    lines = zone.splitlines()
    assert f"mail.example. 3600 IN MX 10 {HOST}." in lines
    assert f'mail.example. 3600 IN TXT "v=spf1 mx a:{HOST} ~all"' in zone
    assert '._domainkey.mail.example. 3600 IN TXT "v=DKIM1; k=rsa; p=' in zone
    assert '_dmarc.mail.example. 3600 IN TXT "v=DMARC1; p=none" ; start with p=none' in zone


def test_doctor_finds_the_published_records_good(published):
    settings, _ = published
    checks = list(domain_checks(settings, "mail.example"))
    assert [c.status for c in checks] == ["ok"] * 4, [c.line() for c in checks]


def test_doctor_fails_a_stale_dkim_key_and_a_missing_mx_naming_the_fix(published, dns_server):
    settings, _ = published
    dns_server.remove("mail.example", "MX")
    from aliasd.mailauth import keys

    keys.rotate(settings, "mail.example")  # the new key is not published yet
    lines = [c.line() for c in domain_checks(settings, "mail.example")]
    assert any(line.startswith("fail dns mail.example MX") and "aliasd dns mail.example" in line
               for line in lines), lines  # fmt: skip
    assert any(line.startswith("fail dns mail.example DKIM") for line in lines), lines


def test_an_unreachable_resolver_is_a_warning(published, dns_server):
    settings, _ = published
    dns_server.silent.add("mail.example")
    checks = list(domain_checks(settings.with_overrides(dns_timeout=0.5), "mail.example"))
    assert [c.status for c in checks] == ["warn"] and "DNS unreachable" in checks[0].detail


def test_dns_for_an_unmanaged_domain_is_refused(aliasd_cli):
    proc = aliasd_cli("dns", "elsewhere.example", check=False)
    assert proc.returncode == 1 and "not a managed domain" in proc.stderr

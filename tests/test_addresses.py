"""Address rules (pure, no database): case, extensions, IDN, refused local parts, sites."""

from __future__ import annotations

import pytest

from aliasd.core.addresses import (
    AddressError,
    normalize_address,
    normalize_domain,
    parse_address,
    registrable_domain,
    site_from_input,
)


def test_addresses_are_case_insensitive():
    assert normalize_address("GitHub.COM@Example.NET") == "github.com@example.net"
    assert normalize_address("  <GitHub.com@example.net>  ") == "github.com@example.net"


def test_extension_resolves_like_the_base_address():
    parsed = parse_address("GitHub.com+News@example.net", "+")
    assert str(parsed) == "github.com@example.net"
    assert parsed.extension == "news"
    assert normalize_address("github.com+news@example.net", "+") == normalize_address(
        "github.com@example.net", "+"
    )


def test_delimiter_is_configurable_and_optional():
    assert normalize_address("shop-promo@example.net", "-") == "shop@example.net"
    # Without a delimiter the + is part of the local part.
    assert normalize_address("a+b@example.net") == "a+b@example.net"
    # A local part that starts with the delimiter keeps it: there is no base to resolve to.
    assert parse_address("+x@example.net", "+").local == "+x"


@pytest.mark.parametrize(
    "given, expected",
    [
        ("Bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.Example.", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("例え.テスト", "xn--r8jz45g.xn--zckzah"),
    ],
)
def test_idn_domains_are_normalised(given, expected):
    assert normalize_domain(given) == expected
    assert normalize_address(f"Shop@{given}") == f"shop@{expected}"


@pytest.mark.parametrize(
    "local, reason",
    [
        ("a b", "a space"),
        ("a\tb", "a tab"),
        ("a,b", "a comma"),
        ('"ab"', "a quote"),
        ("a'b", "a quote"),
        ("a\x01b", "a control character"),
        ("a\x7fb", "a control character"),
        ("a\u00a0b", "whitespace"),
        ("", "empty"),
        (".ab", "dot"),
        ("a..b", "dot"),
        ("x" * 65, "longer than 64"),
        ("bücher", "plain ASCII"),
    ],
)
def test_bad_local_parts_are_refused_with_a_clear_message(local, reason):
    with pytest.raises(AddressError) as err:
        parse_address(f"{local}@example.net")
    assert reason in str(err.value)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("no-at-sign", "no @"),
        ("a@", "domain is empty"),
        ("a@localhost", "two labels"),
        ("a@-bad.example", "invalid label"),
        ("a@exa mple.net", "whitespace"),
        ("a@b@example.net", "'@'"),
        ("a@" + "x" * 64 + ".net", "invalid label"),
    ],
)
def test_bad_addresses_are_refused(text, reason):
    with pytest.raises(AddressError) as err:
        normalize_address(text)
    assert reason in str(err.value)


@pytest.mark.parametrize(
    "given, site",
    [
        ("https://www.GitHub.com/login?x=1", "github.com"),
        ("github.com", "github.com"),
        ("shop.example.co.uk:8443", "shop.example.co.uk"),
        ("http://Bücher.example/", "xn--bcher-kva.example"),
    ],
)
def test_site_from_input(given, site):
    assert site_from_input(given) == site


@pytest.mark.parametrize("given", ["", "not a site", "http://", "localhost", "1.2.3"])
def test_bad_sites_are_refused(given):
    with pytest.raises(AddressError):
        site_from_input(given)


@pytest.mark.parametrize(
    ("given", "registrable"),
    [
        ("mail.github.com", "github.com"),
        ("bounces.shop.co.uk", "shop.co.uk"),
        ("mail.dhl.de", "dhl.de"),  # a three-letter label under a country is not a suffix
        ("mail.ibm.de", "ibm.de"),
        ("em.stackoverflow.email", "stackoverflow.email"),
        ("me.github.io", "me.github.io"),  # private suffixes count: users of github.io differ
        ("Mail.Bücher.de", "xn--bcher-kva.de"),
        ("пример.рф", "xn--e1afmkfd.xn--p1ai"),
        ("mail.xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("co.uk", "co.uk"),  # a public suffix is its own identity
        ("com", None),  # not a domain name at all
        ("192.0.2.7", "192.0.2.7"),
        ("[192.0.2.7]", "192.0.2.7"),
        ("IPv6:2001:db8::1", "2001:db8::1"),
        ("", None),
        (None, None),
        ("bad domain", None),
        ("a..b", None),
    ],
)
def test_registrable_domain_follows_the_public_suffix_list(given, registrable):
    assert registrable_domain(given) == registrable


def test_an_address_header_is_read_as_the_email_package_reads_it_and_kept():
    from aliasd.core.addresses import _kept_header_addresses, header_addresses

    value = '"Shop, Support" <support@shop.example>, bob@b.example (Bob)'
    assert header_addresses(value) == (("Shop, Support", "support@shop.example"),
                                       ("Bob", "bob@b.example"))
    hits = _kept_header_addresses.cache_info().hits
    assert header_addresses(value) == header_addresses(value)
    assert _kept_header_addresses.cache_info().hits == hits + 2  # parsed once
    assert header_addresses("") == ()


def test_a_huge_address_header_is_read_but_never_kept():
    from aliasd.core.addresses import _kept_header_addresses, header_addresses

    huge = ", ".join(f"user{i}@spam{i}.example" for i in range(5000))
    size = _kept_header_addresses.cache_info().currsize
    assert len(header_addresses(huge)) == 5000
    assert _kept_header_addresses.cache_info().currsize == size

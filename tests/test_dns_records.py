"""``aliasd dns DOMAIN`` prints what to publish; served by the tests' DNS server, the
same records satisfy ``aliasd doctor``'s DNS checks; missing ones fail with the fix, and
an unreachable resolver is a warning."""

from __future__ import annotations

import pytest

from aliasd.doctor import domain_checks, host_name_check

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


def test_dns_warns_when_the_mx_would_name_an_unqualified_host(aliasd_cli):
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example")
    aliasd_cli("domain", "add", "mail.example", "--owner", "bob")
    bare = aliasd_cli("dns", "mail.example", env_extra={"ALIASD_AUTHSERV_ID": "vm"})
    assert "mail.example. 3600 IN MX 10 vm." in bare.stdout.splitlines()  # still printed in full
    assert "'vm'" in bare.stderr and "not a fully qualified name" in bare.stderr
    assert "set authserv_id" in bare.stderr
    qualified = aliasd_cli("dns", "mail.example", env_extra={"ALIASD_AUTHSERV_ID": HOST})
    assert qualified.stderr == ""


def test_dns_for_an_unmanaged_domain_is_refused(aliasd_cli):
    proc = aliasd_cli("dns", "elsewhere.example", check=False)
    assert proc.returncode == 1 and "not a managed domain" in proc.stderr
    proc = aliasd_cli("dns", check=False)
    assert proc.returncode == 1 and "no managed domain yet" in proc.stderr


# --- the reverse-alias domain (reply_domain) -------------------------------------------
REPLY = "reply.example"


@pytest.fixture
def replies_published(aliasd_cli, dns_settings, dns_server):
    """A managed domain plus a separate reverse-alias domain; `aliasd dns` (every
    domain) published on the tests' DNS server."""
    env = {"ALIASD_AUTHSERV_ID": HOST, "ALIASD_DNS_RESOLVER": dns_server.address,
           "ALIASD_REPLY_DOMAIN": REPLY}  # fmt: skip
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example", env_extra=env)
    aliasd_cli("domain", "add", "mail.example", "--owner", "bob", env_extra=env)
    zone = aliasd_cli("dns", env_extra=env).stdout
    dns_server.add_zone_lines(zone)
    dns_server.add(HOST, "A", "192.0.2.25")
    settings = dns_settings.with_overrides(authserv_id=HOST, reply_domain=REPLY)
    return settings, zone, env


def test_the_reverse_alias_domain_gets_mx_spf_dkim_and_dmarc(replies_published, aliasd_cli):
    _, zone, env = replies_published
    lines = zone.splitlines()
    assert any(line.startswith(f"{REPLY}. 3600 IN MX 10 {HOST}.") for line in lines), zone
    assert f'{REPLY}. 3600 IN TXT "v=spf1 mx a:{HOST} ~all"' in zone
    assert f'._domainkey.{REPLY}. 3600 IN TXT "v=DKIM1; k=rsa; p=' in zone
    assert f'_dmarc.{REPLY}. 3600 IN TXT "v=DMARC1; p=none" ; start with p=none' in zone
    # the managed domain's records are there too, pointing at the reverse-alias domain
    assert "mail.example. 3600 IN MX" in zone and f"`aliasd dns {REPLY}`" in zone
    # asked for by name, although it is not a managed domain
    alone = aliasd_cli("dns", REPLY, env_extra=env).stdout
    assert alone.strip() == zone.split("\n\n")[-1].strip()


def test_doctor_checks_the_reverse_alias_domain_and_names_a_missing_record(
        replies_published, aliasd_cli, dns_server):  # fmt: skip
    _, _, env = replies_published
    lines = aliasd_cli("doctor", env_extra=env, check=False).stdout.splitlines()
    for what in ("MX", "SPF", "DKIM", "DMARC"):
        assert any(line.startswith(f"ok   dns {REPLY} {what}") for line in lines), lines
    dns_server.remove(REPLY, "MX")
    proc = aliasd_cli("doctor", env_extra=env, check=False)
    assert proc.returncode == 1
    assert any(line.startswith(f"fail dns {REPLY} MX") and f"aliasd dns {REPLY}" in line
               for line in proc.stdout.splitlines()), proc.stdout  # fmt: skip
    assert any(line.startswith("ok   dns mail.example MX") for line in proc.stdout.splitlines())


def test_dkim_list_and_rotate_cover_the_reverse_alias_domain(replies_published, aliasd_cli,
                                                             dns_server):  # fmt: skip
    settings, _, env = replies_published
    listed = aliasd_cli("dkim", "list", env_extra=env).stdout
    assert any(line.startswith(f"{REPLY}\t") and line.endswith("signing")
               for line in listed.splitlines()), listed  # fmt: skip
    rotated = aliasd_cli("dkim", "rotate", REPLY, env_extra=env).stdout
    assert f"for {REPLY}; publish:" in rotated
    # the new key is not published yet: doctor says so
    lines = [c.line() for c in domain_checks(settings, REPLY)]
    assert any(line.startswith(f"fail dns {REPLY} DKIM") for line in lines), lines


def test_forwarded_mail_from_a_reverse_alias_on_the_reply_domain_verifies_with_the_published_key(
        replies_published, database):  # fmt: skip
    """Rewrite mode: From: becomes the correspondent's reverse alias on the reverse-alias
    domain and aliasd signs it there; the signature verifies against `aliasd dns`."""
    import dkim

    from aliasd.core import aliases as core
    from aliasd.core.events import AliasTarget
    from aliasd.mailauth.dns import DkimDns
    from aliasd.milter.processing import Envelope
    from aliasd.milter.replies import ReplyPath, transformed_envelope

    settings, _, _ = replies_published
    with database.session() as s:
        domain = core.list_domains(s)[0]
        domain.reply_mode = "rewrite"
        alias = core.create_alias(s, "shop@mail.example", core.get_user(s, "bob"))
        s.flush()
        target = AliasTarget(alias.id, alias.address, alias.owner_id, None, "active")
    envelope = Envelope(
        sender="support@shop.example", recipients=["shop@mail.example"],
        client_addr="192.0.2.1", helo="mail.shop.example",
        headers=[("From", b"Shop Support <support@shop.example>"),
                 ("To", b"shop@mail.example"), ("Subject", b"order 7"),
                 ("Message-ID", b"<o7@shop.example>")],
        body=bytearray(b"Your order shipped.\r\n"), size=200,
    )  # fmt: skip
    transform = ReplyPath(settings, database).forwarded(envelope, target, None)
    assert transform is not None and transform.insert_headers
    sent = transformed_envelope(envelope, transform).raw_message()
    (from_line,) = [h for h in sent.split(b"\r\n\r\n")[0].split(b"\r\n")
                    if h.lower().startswith(b"from:")]  # fmt: skip
    assert from_line.endswith(f"@{REPLY}>".encode()), from_line
    verifier = dkim.DKIM(sent)
    assert verifier.verify(dnsfunc=DkimDns(settings))
    assert verifier.domain == REPLY.encode()


def test_a_reply_through_a_reverse_alias_on_the_reply_domain_verifies_with_the_published_key(
        replies_published, database):  # fmt: skip
    """The owner answers a reverse alias on the reverse-alias domain: it goes out from
    the alias, signed with the alias domain's key, which `aliasd dns` printed."""
    import dkim

    from aliasd.core import aliases as core
    from aliasd.core import reverse_aliases
    from aliasd.mailauth.dns import DkimDns
    from aliasd.milter.processing import Envelope
    from aliasd.milter.replies import ReplyPath

    settings, _, _ = replies_published
    settings = settings.with_overrides(reply_trusted_networks=["127.0.0.1/32"])
    with database.session() as s:
        alias = core.create_alias(s, "shop@mail.example", core.get_user(s, "bob"))
        s.flush()
        reverse = reverse_aliases.for_correspondent(s, alias, "support@shop.example",
                                                    reply_domain=REPLY).address  # fmt: skip
    assert reverse.endswith(f"@{REPLY}")
    envelope = Envelope(
        sender="bob@real.example", recipients=[reverse], client_addr="127.0.0.1",
        helo="laptop.real.example",
        headers=[("From", b"Bob <bob@real.example>"), ("To", reverse.encode()),
                 ("Subject", b"Re: order 7"), ("Message-ID", b"<r7@real.example>")],
        body=bytearray(b"Thanks!\r\n"), size=200,
    )  # fmt: skip
    outcome = ReplyPath(settings, database).outgoing(envelope)
    assert outcome is not None and outcome.status == "accept", outcome
    transform = outcome.transform
    assert transform.new_sender == "shop@mail.example"
    assert transform.add_recipients == ["support@shop.example"]
    # the message as it leaves: signature on top, our header edits applied
    from aliasd.core.reply_headers import HeaderEdits

    headers = HeaderEdits(change=transform.change_headers, add=transform.add_headers).apply(
        [(n, v.decode()) for n, v in envelope.headers])  # fmt: skip
    headers = [*transform.insert_headers, *headers]
    sent = ("".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n").encode() + b"Thanks!\r\n"
    verifier = dkim.DKIM(sent)
    assert verifier.verify(dnsfunc=DkimDns(settings)), sent
    assert verifier.domain == b"mail.example"


def test_doctor_warns_when_mx_and_spf_would_name_a_bare_host(dns_settings):
    bare = host_name_check(dns_settings.with_overrides(authserv_id="vm"))
    assert bare.status == "warn" and "'vm'" in bare.detail and "authserv_id" in bare.fix
    named = host_name_check(dns_settings.with_overrides(authserv_id=HOST))
    assert named.status == "ok" and HOST in named.detail

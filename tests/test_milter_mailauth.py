"""The milter's authenticate and seal steps in-process (MailPath with the real scanner,
the real database engines and the tests' DNS server): headers added, forged results in
our name removed, the results kept with the event and counted."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from aliasd.core import aliases as core
from aliasd.milter.metrics import MeasuredMailPath
from aliasd.milter.processing import Envelope
from aliasd.models import MailEvent

MESSAGE = [
    ("Authentication-Results", b"mx.aliasd.test; dkim=pass header.d=github.com"),
    ("Authentication-Results", b"mx.upstream.example; spf=pass smtp.mailfrom=a@b.example"),
    ("From", b"GitHub <noreply@github.com>"),
    ("To", b"github.com@example.net"),
    ("Subject", b"Your pull request"),
    ("Date", b"Wed, 25 Nov 2026 10:00:00 +0000"),
]


@pytest.fixture
def path(database, dns_settings, dns_server):
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "github.com@example.net", alice, site="github.com")
    dns_server.add("github.com", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    dns_server.add("_dmarc.github.com", "TXT", "v=DMARC1; p=quarantine")
    mailpath = MeasuredMailPath(dns_settings.with_overrides(authserv_id="mx.aliasd.test"),
                                database)  # fmt: skip
    yield mailpath
    mailpath.close()


def _count(policy: str, dkim: str) -> float:
    value = REGISTRY.get_sample_value("aliasd_milter_forwarded_auth_total",
                                      {"dmarc_policy": policy, "dkim": dkim})  # fmt: skip
    return value or 0.0


def test_forwarded_message_gets_results_a_seal_and_is_counted(path, database):
    before = _count("quarantine", "none")
    verdict = path.process(Envelope(
        sender="noreply@github.com", recipients=["github.com@example.net"],
        client_addr="192.0.2.1", helo="mail.github.com", queue_id="Q1",
        headers=list(MESSAGE), body=bytearray(b"It was merged.\r\n"), size=300,
    ))  # fmt: skip
    assert verdict.status == "accept"
    (ar,) = verdict.header("Authentication-Results")
    assert ar.startswith("mx.aliasd.test; dkim=none")
    assert "dmarc=pass header.from=github.com policy.dmarc=quarantine" in ar
    # trace fields on top, newest first: each insert lands above the ones before it
    top = [n for n, _ in reversed(verdict.transform.insert_headers)]
    assert top[:4] == ["ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results",
                       "Authentication-Results"]
    # the first Authentication-Results claimed our name: removed; the upstream one stays
    assert verdict.remove_headers == [("Authentication-Results", 1)]
    assert _count("quarantine", "none") == before + 1
    with database.session() as s:
        event = s.scalars(select(MailEvent)).one()
    assert event.auth == "spf=pass dkim=none dmarc=pass (p=quarantine) arc=none"


def test_switched_off_adds_nothing(path):
    path.settings = path.settings.with_overrides(mail_auth_enabled=False)
    verdict = path.process(Envelope(
        sender="noreply@github.com", recipients=["github.com@example.net"],
        client_addr="192.0.2.1", helo="mail.github.com", headers=list(MESSAGE),
        body=bytearray(b"x\r\n"), size=100,
    ))  # fmt: skip
    assert verdict.header("Authentication-Results") == [] and verdict.auth is None
    assert not [n for n, _ in verdict.add_headers if n.startswith("ARC-")]


def test_spf_is_evaluated_once_for_the_checks_and_the_scanner(path, monkeypatch):
    import spf as pyspf

    evaluations = []
    real_check2 = pyspf.check2

    def counted(*args, **kwargs):
        evaluations.append(kwargs.get("s"))
        return real_check2(*args, **kwargs)

    monkeypatch.setattr(pyspf, "check2", counted)
    path.settings = path.settings.with_overrides(spf_enabled=True)
    verdicts = [path.process(Envelope(
        sender=sender, recipients=["github.com@example.net"], client_addr=client,
        helo="mail.github.com", queue_id=f"Q{i}", headers=list(MESSAGE),
        body=bytearray(b"It was merged.\r\n"), size=300,
    )) for i, (sender, client) in enumerate([("noreply@github.com", "192.0.2.1"),
                                              ("other@github.com", "198.51.100.9")])]  # fmt: skip
    assert evaluations == ["noreply@github.com", "other@github.com"]  # one per message
    # both still get their own answer: the scanner's symbol and our header
    passed, failed = verdicts
    assert "R_SPF_ALLOW(" in passed.header("X-Spamd-Result")[0]
    assert "spf=pass smtp.mailfrom=noreply@github.com" in passed.header(
        "Authentication-Results")[0]
    assert "R_SPF_FAIL(" in failed.header("X-Spamd-Result")[0]
    assert "spf=fail smtp.mailfrom=other@github.com" in failed.header(
        "Authentication-Results")[0]
    # without the checks the scanner evaluates SPF alone, as before
    path.settings = path.settings.with_overrides(mail_auth_enabled=False)
    path.process(Envelope(
        sender="noreply@github.com", recipients=["github.com@example.net"],
        client_addr="192.0.2.1", helo="mail.github.com", queue_id="Q3",
        headers=list(MESSAGE), body=bytearray(b"x\r\n"), size=100,
    ))  # fmt: skip
    assert len(evaluations) == 3

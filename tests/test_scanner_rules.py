"""Header and content rules, message parsing and SPF of the bundled scanner, on
realistic messages in tests/data/mail. Pure: no database, no network."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from aliasd.scanner.message import message_digest, parse_message
from aliasd.scanner.result import ScanRequest
from aliasd.scanner.rules import RuleContext, content_rules, header_rules
from aliasd.scanner.spf import check_spf, zone_lookup

MAIL = Path(__file__).parent / "data" / "mail"
NOW = dt.datetime(2024, 6, 10, 12, 0, tzinfo=dt.UTC)


def mail(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def symbols(raw: bytes, blocked: str | None = None, **request) -> dict[str, tuple]:
    req = ScanRequest(message=raw, **request)
    ctx = RuleContext(request=req, pm=parse_message(raw), now=NOW, blocked=blocked)
    return {s.name: (s.score, s.options) for s in [*header_rules(ctx), *content_rules(ctx)]}


def test_clean_multipart_message_only_gets_benign_symbols():
    got = symbols(mail("ham_github.eml"), envelope_from="noreply@github.com")
    assert "MIME_GOOD" in got and got["MIME_GOOD"][0] < 0
    for bad in ("MISSING_MID", "MISSING_FROM", "MISSING_SUBJECT", "MISSING_TO", "MISSING_DATE",
                "INVALID_DATE", "DATE_IN_FUTURE", "DATE_IN_PAST", "MIME_HTML_ONLY",
                "RCVD_COUNT_ZERO", "SUBJ_ALL_CAPS", "BROKEN_CONTENT"):
        assert bad not in got, bad
    # From (notifications@) differs from the envelope (noreply@): informational only
    assert got["FROM_NEQ_ENVFROM"] == (0.0, ("notifications@github.com", "noreply@github.com"))


def test_spammy_headers_fire_their_rules():
    got = symbols(mail("spam_pharmacy.eml"), envelope_from="bounce-77123@promo-rx24.example.biz")
    for name in ("MISSING_MID", "R_UNDISC_RCPT", "SUBJ_ALL_CAPS", "MIME_HTML_ONLY", "HTTP_TO_IP",
                 "DATE_IN_FUTURE"):
        assert name in got, name
    # the Date is four days after the message was received (topmost Received)
    assert got["DATE_IN_FUTURE"][1] == ("96.0h",)
    assert got["HTTP_TO_IP"][1] == ("203.0.113.99",)
    assert sum(score for score, _ in got.values()) >= 6


def test_missing_headers_each_have_a_symbol():
    raw = b"Received: from a by b; Mon, 10 Jun 2024 11:00:00 +0000\n\nhello there, just a body\n"
    got = symbols(raw)
    assert {"MISSING_MID", "MISSING_FROM", "MISSING_SUBJECT", "MISSING_TO", "MISSING_DATE"} <= set(got)
    assert "RCVD_COUNT_ZERO" not in got
    assert "RCVD_COUNT_ZERO" in symbols(b"From: a@b.example\nSubject: x\n\nbody\n")


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("Mon, 10 Jun 2024 11:59:00 +0000", None),
        ("Mon, 10 Jun 2024 18:00:00 +0200", "DATE_IN_FUTURE"),  # 16:00 UTC, 4 h ahead
        ("Fri, 07 Jun 2024 08:00:00 +0000", "DATE_IN_PAST"),
        ("yesterday at noon", "INVALID_DATE"),
        ("Mon, 45 Jun 2024 11:00:00 +0000", "INVALID_DATE"),
    ],
)
def test_date_rules_judge_against_the_received_time(date, expected):
    raw = (
        "Received: from x by mx.example.net; Mon, 10 Jun 2024 12:00:00 +0000\n"
        f"From: a@b.example\nTo: c@d.example\nSubject: s\nMessage-ID: <1@b.example>\n"
        f"Date: {date}\n\nbody\n"
    ).encode()
    got = set(symbols(raw)) & {"DATE_IN_FUTURE", "DATE_IN_PAST", "INVALID_DATE"}
    assert got == ({expected} if expected else set())


def test_mail_arriving_without_received_is_judged_against_the_clock():
    raw = b"From: a@b.example\nDate: Mon, 10 Jun 2024 20:00:00 +0000\n\nbody\n"
    assert "DATE_IN_FUTURE" in symbols(raw, client_addr="192.0.2.7")  # NOW is 12:00 UTC
    old = b"From: a@b.example\nDate: Fri, 06 Sep 2002 11:02:11 -0400\n\nbody\n"
    assert "DATE_IN_PAST" in symbols(old, client_addr="192.0.2.7")


def test_stored_mail_without_received_gets_no_date_verdict():
    """A saved message with no Received date (scanned from a file, no SMTP client) has
    no known arrival time: an old Date is not "in the past" because today is later."""
    old = b"From: a@b.example\nDate: Fri, 06 Sep 2002 11:02:11 -0400\n\nbody\n"
    future = b"From: a@b.example\nDate: Mon, 10 Jun 2024 20:00:00 +0000\n\nbody\n"
    assert not {"DATE_IN_PAST", "DATE_IN_FUTURE"} & set(symbols(old) | symbols(future))
    assert "INVALID_DATE" in symbols(b"From: a@b.example\nDate: yesterday\n\nbody\n")


def test_alias_site_mismatch_uses_envelope_and_from():
    raw = mail("ham_github.eml")
    assert "ALIAS_SITE_MISMATCH" not in symbols(raw, envelope_from="noreply@github.com",
                                                alias_site="github.com")
    # an ESP bounce domain in the envelope, but From is the site itself: related
    assert "ALIAS_SITE_MISMATCH" not in symbols(raw, envelope_from="bounces@esp.example.com",
                                                alias_site="github.com")
    got = symbols(mail("spam_loan.eml"), envelope_from="info@fast-loans.example.top",
                  alias_site="shop.example")
    assert got["ALIAS_SITE_MISMATCH"][1] == ("fast-loans.example.top", "shop.example")
    assert "ALIAS_SITE_MISMATCH" not in symbols(mail("spam_loan.eml"))  # no site: no verdict


def test_blocklisted_reports_what_the_block_decision_matched():
    """Whether a rule refuses the sender is core's decision (tests/test_block_decision.py);
    the symbol names what matched."""
    raw = mail("spam_crypto.eml")
    assert symbols(raw, "example.xyz")["BLOCKLISTED"] == (15.0, ("example.xyz",))
    assert "BLOCKLISTED" not in symbols(raw)


def test_broken_mime_and_junk_never_raise():
    raw = mail("broken_mime.eml")
    pm = parse_message(raw)
    assert pm.defects > 0
    got = symbols(raw)
    assert {"INVALID_DATE", "INVALID_MSGID", "BROKEN_CONTENT"} <= set(got)
    junk = bytes(range(256)) * 400 + b"\x00\xff" * 1000
    assert isinstance(symbols(junk), dict)
    huge = b"X-Long: " + b"a" * 2_000_000 + b"\n" + b"".join(
        b"X-H%d: %s\n" % (i, b"v" * 50) for i in range(5000)
    ) + b"\nbody\n"
    got = symbols(huge)
    assert "MISSING_FROM" in got
    assert isinstance(symbols(b""), dict)
    assert isinstance(symbols(b"\n\n\n"), dict)


def test_digest_ignores_transport_headers_only():
    raw = mail("ham_colleague.eml")
    relayed = b"Received: from relay by mx2; Wed, 15 May 2024 16:41:00 +0000\r\n" + raw.replace(b"\n", b"\r\n")
    assert message_digest(raw) == message_digest(relayed)
    assert message_digest(raw) != message_digest(raw.replace(b"slides", b"notes"))


def test_digest_is_the_same_for_the_copy_another_mailbox_received():
    raw = mail("ham_colleague.eml").replace(b"\r\n", b"\n")
    head, _, body = raw.partition(b"\n\n")
    # as a mailbox provider delivers it after forwarding through aliasd: its own trace
    # headers, the one-click headers and the reverse alias's Reply-To, refolded
    copy = (b"X-Received: by 2002:a05:6a00 with SMTP id x; Wed, 15 May 2024 09:41:00 -0700\n"
            b"Received-SPF: pass (google.com: domain of x@example.net) client-ip=192.0.2.1;\n"
            b"X-Gm-Message-State: AOJu0YzQ\n"
            + head.replace(b": ", b":\n  ", 1)
            + b"\nList-Unsubscribe: <https://aliases.example.net/oneclick/abc>\n"
              b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\n"
              b"Reply-To: ra-123@example.net\n\n" + body)
    assert message_digest(copy) == message_digest(raw)
    assert message_digest(raw) != message_digest(raw.replace(b"Subject: ", b"Subject: Re: ", 1))


ZONE = {
    ("example.org", "TXT"): ["v=spf1 ip4:192.0.2.0/24 -all"],
    ("soft.example.org", "TXT"): ["v=spf1 ip4:192.0.2.0/24 ~all"],
    ("inc.example.org", "TXT"): ["v=spf1 include:example.org -all"],
    ("broken.example.org", "TXT"): ["v=spf1 ip4:999.1.1.1 -all"],
}


@pytest.mark.parametrize(
    ("sender", "ip", "expected"),
    [
        ("a@example.org", "192.0.2.10", "R_SPF_ALLOW"),
        ("a@example.org", "198.51.100.1", "R_SPF_FAIL"),
        ("a@soft.example.org", "198.51.100.1", "R_SPF_SOFTFAIL"),
        ("a@inc.example.org", "192.0.2.99", "R_SPF_ALLOW"),
        ("a@none.example.org", "192.0.2.10", "R_SPF_NA"),
        ("a@broken.example.org", "192.0.2.10", "R_SPF_PERMFAIL"),
    ],
)
def test_spf_with_injected_dns(sender, ip, expected):
    result = check_spf(ip, sender, "mail.example.org", lookup=zone_lookup(ZONE))
    assert result is not None and result.name == expected
    assert result.options[0] == sender.split("@")[1]


def test_spf_dns_failure_is_a_dnsfail_symbol():
    import spf as pyspf

    def failing(name, qtype, *args, **kwargs):
        raise pyspf.TempError("DNS timeout")

    assert check_spf("192.0.2.1", "a@example.org", "h", lookup=failing).name == "R_SPF_DNSFAIL"
    assert check_spf(None, "a@example.org", "h", lookup=failing) is None


def test_mime_and_content_rules():
    outlook_forged = (
        "Received: from x by mx.example.net; Mon, 10 Jun 2024 12:00:00 +0000\n"
        "From: Deals <deals@shop.example>\nTo: you@example.net\nSubject: Save $50 today\n"
        "Date: Mon, 10 Jun 2024 11:59:00 +0000\nMessage-ID: <1@shop.example>\n"
        "MIME-Version: 1.0\nX-Priority: 1\nX-MSMail-Priority: High\n"
        "Content-Type: multipart/mixed; boundary=b\n\n"
        "--b\nContent-Type: text/plain\nContent-Transfer-Encoding: 7bit\n\n"
        "Caf\xe9 offer: act now, satisfaction guaranteed. To be removed from this list reply.\n"
        "--b--\n"
    ).encode("latin-1")
    got = symbols(outlook_forged)
    for name in ("HAS_X_PRIO_ONE", "MISSING_MIMEOLE", "SUBJECT_HAS_CURRENCY", "CTYPE_MIXED_BOGUS",
                 "R_BAD_CTE_7BIT", "R_MISSING_CHARSET", "SPAM_PHRASES", "OPT_IN_CLAIM"):
        assert name in got, name
    assert got["SPAM_PHRASES"][1] == ("act now",)
    # the plain colleague mail trips none of them
    clean = symbols(mail("ham_colleague.eml"))
    for name in ("HAS_X_PRIO_ONE", "MISSING_MIMEOLE", "SUBJECT_HAS_CURRENCY", "CTYPE_MIXED_BOGUS",
                 "R_BAD_CTE_7BIT", "R_MISSING_CHARSET", "SPAM_PHRASES", "OPT_IN_CLAIM",
                 "MISSING_MIME_VERSION"):
        assert name not in clean, name
    html_no_mime = b"From: a@b.example\nContent-Type: text/html\n\n<p>hello</p>\n"
    assert "MISSING_MIME_VERSION" in symbols(html_no_mime)


def test_shared_spf_is_evaluated_once_per_timeout_across_threads():
    import threading

    from aliasd.scanner.spf import SharedSpf

    asked = []

    def lookup(name, qtype, *args, **kwargs):
        asked.append((name, qtype))
        return zone_lookup(ZONE)(name, qtype, *args, **kwargs)

    shared = SharedSpf("192.0.2.1", "a@example.org", "mail.example.org", lookup=lookup)
    alone = check_spf("192.0.2.1", "a@example.org", "mail.example.org", lookup=zone_lookup(ZONE))
    got = []
    threads = [threading.Thread(target=lambda: got.append(shared(5.0))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [alone] * 4
    first = list(asked)
    assert first and shared(5.0) == alone and asked == first  # answered from the evaluation
    assert shared(2.0) == alone and asked == first * 2  # another timeout: asked again

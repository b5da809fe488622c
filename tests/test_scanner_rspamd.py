"""The rspamd backend against Debian's real rspamd 3.4 on loopback (one normal worker,
the controller, a private redis for Bayes; no network checks)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aliasd.config import load_settings
from aliasd.scanner import LearnOutcome, ScannerError, ScanRequest, build_scanner
from aliasd.scanner.rspamd import RspamdScanner
from tests.harness.net import free_port
from tests.harness.rspamd import RspamdInstance

MAIL = Path(__file__).parent / "data" / "mail"


def mail(name: str) -> bytes:
    return (MAIL / name).read_bytes()


@pytest.fixture(scope="module")
def rspamd():
    with RspamdInstance(password="s3cret") as instance:
        yield instance


def make_settings(rspamd: RspamdInstance, tmp_path, **extra):
    return load_settings(
        environ={},
        data_dir=str(tmp_path),
        scanner_backend="rspamd",
        rspamd_url=rspamd.url,
        rspamd_controller_url=rspamd.controller_url,
        rspamd_password=rspamd.password,
        **extra,
    )


def test_checkv2_with_envelope(rspamd, tmp_path):
    scanner = build_scanner(make_settings(rspamd, tmp_path), None)
    assert isinstance(scanner, RspamdScanner)
    spam = scanner.scan(ScanRequest(
        message=mail("spam_pharmacy.eml"),
        envelope_from="bounce-77123@promo-rx24.example.biz",
        recipients=["shop.example.com@example.net", "forum.example.org@example.net"],
        helo="pc-83-12.dsl.example.ru",
        queue_id="4Q1xYz3kLmz9sT",
    ))
    names = set(spam.symbol_names())
    assert {"MISSING_MID", "SUBJ_ALL_CAPS", "MIME_HTML_ONLY"} <= names
    assert "FROM_NEQ_ENVFROM" in names  # the envelope sender reached rspamd
    assert spam.required_score == 15.0
    assert spam.score == pytest.approx(sum(s.score for s in spam.symbols), abs=0.05)
    flag = "True" if spam.action.value == "reject" else "False"
    assert spam.spamd_result_header().startswith(f"default: {flag} [{spam.score:.2f} / 15.00]; ")
    assert spam.message_id is None  # rspamd says "undef"; we say: none

    ham = scanner.scan(ScanRequest(message=mail("ham_colleague.eml"),
                                   envelope_from="anna.berg@fastmail.example.org",
                                   recipients=["jonas@example.net", "me@example.net"]))
    assert ham.action.value == "no action"
    assert "FROM_NEQ_ENVFROM" not in ham.symbol_names()
    # To: me@example.net is among the envelope recipients: both recipients arrived
    assert "TO_MATCH_ENVRCPT_ALL" in ham.symbol_names()
    assert ham.score < spam.score
    other = scanner.scan(ScanRequest(message=mail("ham_colleague.eml"), recipients=["jonas@example.net"]))
    assert "TO_MATCH_ENVRCPT_ALL" not in other.symbol_names()


def test_learning_through_the_controller(rspamd, tmp_path):
    scanner = build_scanner(make_settings(rspamd, tmp_path), None)
    assert scanner.learn(mail("spam_lottery.eml"), True) is LearnOutcome.LEARNED
    assert scanner.learn(mail("spam_lottery.eml"), True) is LearnOutcome.DUPLICATE
    assert scanner.learn(mail("ham_family.eml"), False) is LearnOutcome.LEARNED
    result = scanner.scan(ScanRequest(message=mail("spam_lottery.eml")))
    assert "BAYES_SPAM" in result.symbol_names()
    stats = scanner.stats()
    assert stats["learned"] >= 2
    assert sum(v for k, v in stats.items() if k.startswith("scanned:")) >= 1

    wrong = build_scanner(make_settings(rspamd, tmp_path).with_overrides(rspamd_password="wrong"), None)
    with pytest.raises(ScannerError):
        wrong.learn(mail("spam_loan.eml"), True)


def test_unreachable_rspamd_is_a_scanner_error(tmp_path):
    port = free_port()
    settings = load_settings(environ={}, data_dir=str(tmp_path), scanner_backend="rspamd",
                             rspamd_url=f"http://127.0.0.1:{port}",
                             rspamd_controller_url=f"http://127.0.0.1:{port}", milter_timeout=2)
    scanner = build_scanner(settings, None)
    with pytest.raises(ScannerError):
        scanner.scan(ScanRequest(message=mail("ham_family.eml")))
    with pytest.raises(ScannerError):
        scanner.learn(mail("ham_family.eml"), False)


def test_cli_scan_with_the_rspamd_backend(rspamd, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIASD_")}
    env.update(ALIASD_DATA_DIR=str(tmp_path), ALIASD_ENV="development", ALIASD_SECRET_KEY="x",
               ALIASD_SCANNER_BACKEND="rspamd", ALIASD_RSPAMD_URL=rspamd.url,
               ALIASD_RSPAMD_CONTROLLER_URL=rspamd.controller_url, ALIASD_RSPAMD_PASSWORD="s3cret")
    proc = subprocess.run([sys.executable, "-m", "aliasd", "scan", str(MAIL / "spam_pharmacy.eml")],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    assert "[Metric: default]" in proc.stdout
    assert "Symbol: MISSING_MID (" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "aliasd", "stat"],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    assert "Statfile: BAYES_SPAM type: rspamd" in proc.stdout
    assert "Messages scanned: 0" not in proc.stdout

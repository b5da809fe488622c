"""The private Postfix used by the mail tests works on this machine: it accepts mail for
a virtual alias domain, refuses unknown recipients at RCPT and relays to the capture server."""

from __future__ import annotations

import pytest

from tests.harness.postfix import CaptureServer, PostfixInstance, postmap, postmap_query, swaks

pytestmark = pytest.mark.postfix


@pytest.fixture(scope="module")
def mail_setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("pf")
    virtual = base / "virtual"
    virtual.write_text("github.com@example.net alice@real.example\n")
    assert postmap(f"hash:{virtual}").returncode == 0
    with CaptureServer() as capture:
        pf = PostfixInstance(
            base / "postfix",
            relay_port=capture.port,
            main_cf={
                "virtual_alias_domains": "example.net",
                "virtual_alias_maps": f"hash:{virtual}",
            },
        )
        with pf:
            yield pf, capture, virtual


def test_relays_alias_mail_to_the_destination(mail_setup):
    pf, capture, _ = mail_setup
    result = swaks(pf.smtp_port, to="github.com@example.net")
    assert result.returncode == 0, result.stdout + result.stderr
    msg = capture.wait_for(lambda m: m.rcpt_tos == ["alice@real.example"])
    assert msg.mail_from == "news@shop.example"


def test_unknown_recipient_refused_at_rcpt(mail_setup):
    pf, _, _ = mail_setup
    result = swaks(pf.smtp_port, to="nobody@example.net")
    assert result.returncode != 0
    assert "550 5.1.1" in result.stdout


def test_postmap_query_on_private_config(mail_setup):
    _, _, virtual = mail_setup
    assert postmap_query("github.com@example.net", f"hash:{virtual}")[:2] == (0, "alice@real.example")
    assert postmap_query("nobody@example.net", f"hash:{virtual}")[0] == 1

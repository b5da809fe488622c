"""Defects found in review of the header_checks import, through the real CLI and
Postfix's own postmap, on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from aliasd.models import BlockRule


def test_import_never_turns_a_deferring_rule_into_a_bounce(database, aliasd_cli, tmp_path):
    """aliasd's table holds REJECT rules only (5xx). An imported rule answering 4xx
    defers the mail (the sender retries); imported as REJECT it would bounce it."""
    table = tmp_path / "old_header_checks"
    table.write_text(
        "/^Subject:.*later/ 450 4.7.1 Try again later\n"
        "/^Subject:.*never/ 554 5.7.1 Go away id=7\n"
    )
    live = tmp_path / "hc"
    env = {"ALIASD_BLOCKLIST_FILE": str(live), "ALIASD_BLOCKLIST_RELOAD_COMMAND": "true"}
    out = aliasd_cli("blocklist", "import", str(table), env_extra=env).stdout
    assert "line 1: not imported" in out
    assert "1 rules imported" in out
    with database.session() as s:
        patterns = s.scalars(select(BlockRule.pattern)).all()
    assert patterns == ["/^Subject:.*never/"]
    assert "later" not in live.read_text()

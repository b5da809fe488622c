"""Importing a foreign header_checks table can never poison the block list: files that
are not UTF-8 are refused whole, overlong lines are skipped in bounded memory, bad lines
are reported by number while the rest is imported, and no rule that matches ordinary
mail is ever published, whatever path it came through. Checked through the real
``aliasd`` command and Postfix's own ``postmap -q`` against the table written."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from aliasd.core import blocking
from aliasd.core.ordinary_mail import ordinary_headers
from aliasd.models import BlockRule
from aliasd.postfix import publisher
from tests.harness.cli import settings_env
from tests.harness.postfix import postmap

RULES = [f'/^Subject:.*offer{i}/ REJECT "Plz stop sending SPAM id={i}"' for i in range(1, 51)]
RULES[7] = r'/^From:.*@massnews\.gr/ REJECT "Plz stop sending SPAM id=8"'


def table_rules(db) -> list[BlockRule]:
    with db.session() as s:
        return list(s.scalars(select(BlockRule).order_by(BlockRule.id)))


def ordinary_hits(table: Path) -> list[str]:
    """The ordinary header lines Postfix's own lookup refuses with ``table``."""
    proc = postmap("-q", "-", f"pcre:{table}", input="".join(h + "\n" for h in ordinary_headers()))
    assert proc.stderr == ""
    return [line for line in proc.stdout.splitlines() if line]


@pytest.fixture
def live(tmp_path, settings):
    return {"ALIASD_BLOCKLIST_FILE": str(tmp_path / "header_checks"),
            "ALIASD_BLOCKLIST_RELOAD_COMMAND": "true"}  # fmt: skip


# --- encodings -------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_utf16_list_is_refused_and_nothing_imported(database, aliasd_cli, tmp_path, live, encoding):
    source = tmp_path / "header_checks.txt"
    source.write_bytes(("\n".join(RULES) + "\n").encode(encoding))
    proc = aliasd_cli("blocklist", "import", str(source), check=False, env_extra=live)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "save it as UTF-8" in proc.stderr and "Nothing was imported" in proc.stderr
    assert table_rules(database) == []
    assert not Path(live["ALIASD_BLOCKLIST_FILE"]).exists()


def test_invalid_utf8_names_the_line_and_a_utf8_bom_is_fine(database, aliasd_cli, tmp_path, live):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"/^Subject:.*ok/ REJECT x\n/^Subject:.*caf\xe9/ REJECT y\n")
    proc = aliasd_cli("blocklist", "import", str(bad), check=False, env_extra=live)
    assert proc.returncode == 1 and "line 2 is not valid UTF-8" in proc.stderr
    assert table_rules(database) == []
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + RULES[0].encode() + b"\n")
    aliasd_cli("blocklist", "import", str(bom), env_extra=live)
    assert [r.pattern for r in table_rules(database)] == ["/^Subject:.*offer1/"]


# --- rules that match ordinary mail -----------------------------------------------------
def test_a_too_broad_rule_is_imported_disabled_and_never_published(database, aliasd_cli, tmp_path, live):
    source = tmp_path / "list.txt"
    source.write_text(
        RULES[0] + "\n"
        '/\\//msmxm REJECT "what a UTF-16 list read as UTF-8 turned into"\n'
        '/^Received:/ REJECT "every message"\n'
        + RULES[7] + "\n"
    )
    out = aliasd_cli("blocklist", "import", str(source), env_extra=live).stdout
    assert "line 2: defective: /\\//msmxm matches the ordinary header line 'Content-Type:" in out
    assert "line 3: defective: /^Received:/ matches the ordinary header line 'Received:" in out
    assert "4 rules imported" in out
    assert [(r.pattern, r.enabled) for r in table_rules(database)] == [
        ("/^Subject:.*offer1/", True), ("/\\//msmxm", False), ("/^Received:/", False),
        ("/^From:.*@massnews\\.gr/", True),
    ]
    table = Path(live["ALIASD_BLOCKLIST_FILE"])
    assert ordinary_hits(table) == []
    # Enabling one by hand does not publish it either: the writer refuses the rule by id.
    enabled = aliasd_cli("blocklist", "enable", "3", check=False, env_extra=live)
    assert enabled.returncode == 1
    assert "rule 3 not published: /^Received:/ matches the ordinary header line" in enabled.stderr
    assert ordinary_hits(table) == [] and "/^Subject:.*offer1/" in table.read_text()


def test_regex_add_refuses_a_rule_matching_ordinary_mail(database, aliasd_cli, live):
    for pattern in ("/^Content-Type:/", "/gmail\\.com/", "/^Date:/", "/^Message-ID:/"):
        proc = aliasd_cli("blocklist", "add", "--regex", pattern, check=False, env_extra=live)
        assert proc.returncode == 1, pattern
        assert f"not added: {pattern} matches the ordinary header line" in proc.stderr
    # A freemail domain that is not in autoblock_exempt_domains is still caught by the
    # ordinary-mail baseline.
    libero = aliasd_cli("blocklist", "add", "libero.it", check=False, env_extra=live)
    assert libero.returncode == 1 and "would refuse ordinary mail" in libero.stderr
    assert table_rules(database) == []
    aliasd_cli("blocklist", "add", "--regex", "/^Subject:.*cheap watches/", env_extra=live)
    assert [r.pattern for r in table_rules(database)] == ["/^Subject:.*cheap watches/"]


def test_publisher_leaves_out_any_enabled_rule_matching_ordinary_mail(database, settings, tmp_path):
    """A broad rule that reached the database some other way (an old version, a hand
    edit, an auto-block) is never written: the table keeps every other rule."""
    st = settings.with_overrides(blocklist_file=str(tmp_path / "hc"))
    with database.session() as s:
        good = blocking.block_domain(s, st, "massnews.gr")
        for pattern in ("/^From:.*@outlook\\.com/", "/^Received: from/"):
            s.add(BlockRule(kind="regex", value=pattern[1:-1], pattern=pattern,
                            reject_text="x", source="auto", enabled=True))
    result = publisher.publish(st, database)
    assert [(r.pattern, r.header.split(":")[0]) for r in result.refused] == [
        ("/^From:.*@outlook\\.com/", "From"), ("/^Received: from/", "Received"),
    ]
    assert not result.ok and "matches the ordinary header line" in result.refused[0].reason
    table = Path(st.effective_blocklist_file)
    assert good.pattern in table.read_text() and result.rules == 1
    assert ordinary_hits(table) == []


# --- per-line errors --------------------------------------------------------------------
def test_tab_and_control_characters_are_reported_per_line_and_the_rest_imported(
    database, aliasd_cli, tmp_path, live
):
    source = tmp_path / "list.txt"
    source.write_bytes(
        RULES[0].encode() + b"\n"
        b"/^Subject:\tcheap/ REJECT tab\n"
        b"/^Subject:.*\x07bell/ REJECT bell\n"
        + RULES[1].encode() + b"\n"
    )
    proc = aliasd_cli("blocklist", "import", str(source), env_extra=live)
    assert "Traceback" not in proc.stderr
    assert "line 2: not imported: the pattern contains a tab or control character (\\t)" in proc.stdout
    assert "line 3: not imported: the pattern contains a tab or control character (\\x07)" in proc.stdout
    assert "2 rules imported" in proc.stdout
    assert [r.pattern for r in table_rules(database)] == ["/^Subject:.*offer1/", "/^Subject:.*offer2/"]


def test_a_carriage_return_inside_a_line_is_read_as_postfix_reads_it(database, aliasd_cli, tmp_path, live):
    """Postfix ends a line at newline only (a CR before it is dropped): a CR inside a line
    does not start a second rule. Read as two rules, the second one here would refuse
    every message with a Received: header."""
    source = tmp_path / "list.txt"
    source.write_bytes(
        b'/^Subject:.*offer1/ REJECT "one"\r/^Received:/ REJECT "not a rule"\r\n'
        b"/^Subject:.*cr\rinside/ REJECT cr in the pattern\r\n"
        + RULES[1].encode() + b"\r\n"
    )
    # Postfix itself: line 1 is one rule whose text carries the rest.
    original = postmap("-q", "Received: from x", f"pcre:{source}")
    assert original.returncode == 1 and original.stderr == ""
    proc = aliasd_cli("blocklist", "import", str(source), env_extra=live)
    assert "line 2: not imported: the pattern contains a tab or control character (\\r)" in proc.stdout
    assert "2 rules imported" in proc.stdout
    assert [r.pattern for r in table_rules(database)] == ["/^Subject:.*offer1/", "/^Subject:.*offer2/"]
    assert ordinary_hits(Path(live["ALIASD_BLOCKLIST_FILE"])) == []


# --- bounded memory -----------------------------------------------------------------------
def peak_rss_mb(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run ``aliasd ARGS``; its peak resident memory and its output. Read as VmHWM from
    /proc while it runs: getrusage's ru_maxrss would also count the test process's own
    memory, which a forked child inherits as its starting high-water mark."""
    proc = subprocess.Popen([sys.executable, "-m", "aliasd", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()))
    reader.start()
    peak_kb = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            break
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peak_kb = max(peak_kb, int(line.split()[1]))
        time.sleep(0.005)
    proc.wait(timeout=120)
    reader.join()
    return peak_kb / 1024, b"".join(chunks).decode("utf-8", "replace")


def test_a_50mb_line_is_skipped_in_bounded_memory(database, settings, tmp_path, live):
    env = settings_env(settings)
    env.update(live)
    small = tmp_path / "small.txt"
    small.write_text(RULES[0] + "\n")
    baseline, _ = peak_rss_mb(["blocklist", "import", "--dry-run", str(small)], env)
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as fh:
        fh.write((RULES[0] + "\n").encode())
        fh.write(b"/^Subject:.*")
        for _ in range(50):
            fh.write(b"a" * (1024 * 1024))
        fh.write(b"/ REJECT x\n")
        fh.write((RULES[1] + "\n").encode())
    peak, output = peak_rss_mb(["blocklist", "import", str(huge)], env)
    assert "Traceback" not in output
    assert "line 2: not imported: the line is 52428822 bytes long, over the limit of 102400" in output
    line2 = next(line for line in output.splitlines() if line.startswith("line 2:"))
    assert len(line2) < 300  # the offending text is quoted, not copied
    assert "2 rules imported" in output
    assert [r.pattern for r in table_rules(database)] == ["/^Subject:.*offer1/", "/^Subject:.*offer2/"]
    # Holding the line once would cost 50 MB; the old reader needed ~100 bytes per byte.
    print(f"peak RSS {peak:.0f} MB, baseline {baseline:.0f} MB")
    assert peak < baseline + 25, (baseline, peak)


def test_alias_import_skips_an_overlong_line_in_bounded_memory(database, settings, aliasd_cli, tmp_path):
    aliasd_cli("user", "add", "bob", "--mailbox", "bob@real.example")
    aliasd_cli("domain", "add", "example.net", "--owner", "bob")
    env = settings_env(settings)
    source = tmp_path / "virtual"
    with open(source, "wb") as fh:
        fh.write(b"a@example.net bob@real.example\n")
        for _ in range(50):
            fh.write(b"x" * (1024 * 1024))
        fh.write(b"@example.net bob@real.example\n")
        fh.write(b"b@example.net bob@real.example\n")
    small = tmp_path / "small"
    small.write_text("c@example.net bob@real.example\n")
    baseline, _ = peak_rss_mb(["alias", "import", "--dry-run", str(small)], env)
    peak, output = peak_rss_mb(["alias", "import", str(source)], env)
    assert "imported 2, updated 0, duplicates 0, errors 1" in output
    [problem] = [line for line in output.splitlines() if line.startswith(f"{source}:2:")]
    assert "over the limit of 102400" in problem and len(problem) < 300 + len(str(source))
    print(f"peak RSS {peak:.0f} MB, baseline {baseline:.0f} MB")
    assert peak < baseline + 25, (baseline, peak)

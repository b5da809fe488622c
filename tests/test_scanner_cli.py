"""aliasd learn-spam / learn-ham / scan / stat through the real console command, on
Maildirs, mbox files and plain files, against SQLite and PostgreSQL."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

MAIL = Path(__file__).parent / "data" / "mail"
HAM = ["ham_github.eml", "ham_colleague.eml", "ham_invoice.eml", "ham_family.eml"]
SPAM = ["spam_pharmacy.eml", "spam_lottery.eml", "spam_loan.eml", "spam_crypto.eml"]
ENV = {"ALIASD_BAYES_MIN_LEARNS": "2"}


def make_maildir(root: Path, names: list[str]) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    for i, name in enumerate(names):
        sub = "cur" if i % 2 else "new"
        shutil.copy(MAIL / name, root / sub / f"17158{i}.M{i}P1.host:2,S" if sub == "cur" else root / sub / f"17158{i}.M{i}P1.host")
    (root / "tmp" / "partial").write_bytes(b"From: half written")  # tmp/ is not mail yet
    return root


def make_mbox(path: Path, names: list[str]) -> Path:
    with path.open("wb") as fh:
        for name in names:
            body = (MAIL / name).read_bytes().replace(b"\nFrom ", b"\n>From ")
            fh.write(b"From MAILER-DAEMON Thu Jan  1 00:00:00 2024\n" + body.rstrip(b"\n") + b"\n\n")
    return path


def summary(out: str) -> dict[str, int]:
    m = re.search(r"learned: (\d+), relearned: (\d+), duplicates: (\d+), failed: (\d+)", out)
    assert m, out
    return dict(zip(("learned", "relearned", "duplicates", "failed"), map(int, m.groups()), strict=True))


def test_learn_scan_and_stat(aliasd_cli, tmp_path):
    maildir = make_maildir(tmp_path / "Spam", SPAM[:2])
    mbox = make_mbox(tmp_path / "spam.mbox", SPAM[2:3] + SPAM[:1])  # one new, one already in the Maildir
    junk = tmp_path / "notes.txt"
    junk.write_text("just some notes, not a message")
    proc = aliasd_cli("learn-spam", str(maildir), str(mbox), str(junk), str(tmp_path / "missing"), env_extra=ENV)
    assert summary(proc.stdout) == {"learned": 3, "relearned": 0, "duplicates": 1, "failed": 2}
    assert "learning spam" in proc.stderr  # the progress bar
    assert "missing: no such file or directory" in proc.stderr

    hamdir = tmp_path / "ham"
    hamdir.mkdir()
    for name in HAM[:3]:
        shutil.copy(MAIL / name, hamdir / name)
    proc = aliasd_cli("learn-ham", "--quiet", str(hamdir), env_extra=ENV)
    assert summary(proc.stdout) == {"learned": 3, "relearned": 0, "duplicates": 0, "failed": 0}
    assert proc.stderr == ""
    # a spam learned as ham by mistake, then corrected: it moves
    proc = aliasd_cli("learn-ham", "-q", str(MAIL / SPAM[1]), env_extra=ENV)
    assert summary(proc.stdout)["relearned"] == 1

    # a message learned as spam: Bayes is sure of it
    proc = aliasd_cli("scan", str(MAIL / "spam_loan.eml"), "--from", "info@fast-loans.example.top",
                      "--site", "forum.example", env_extra=ENV)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"Results for file: {MAIL / 'spam_loan.eml'} (")
    assert lines[1] == "[Metric: default]"
    assert lines[2].startswith("Action: ")
    assert lines[3] in ("Spam: true", "Spam: false")
    assert re.fullmatch(r"Score: -?\d+\.\d\d / 15\.00", lines[4])
    symbols = [line for line in lines if line.startswith("Symbol: ")]
    assert any(re.fullmatch(r"Symbol: BAYES_SPAM \(\d+\.\d\d\)\[\d+\.\d\d%\]", s) for s in symbols), symbols
    assert "Symbol: ALIAS_SITE_MISMATCH (1.00)[fast-loans.example.top, forum.example]" in symbols
    assert "Symbol: MIME_HTML_ONLY (0.20)" in symbols
    assert lines[-1] == "Message-ID: a1b2c3d4e5.loan@fast-loans.example.top"

    proc = aliasd_cli("scan", "-", input=(MAIL / "ham_family.eml").read_text(), env_extra=ENV)
    assert "Results for file: stdin" in proc.stdout
    assert "Action: no action" in proc.stdout and "Symbol: BAYES_HAM" in proc.stdout

    proc = aliasd_cli("stat", env_extra=ENV)
    out = proc.stdout
    assert "Messages scanned: 2" in out
    assert "Messages with action no action: 1, 50.00%" in out
    assert "Messages learned: 6" in out
    assert "Statfile: BAYES_SPAM type: database; learned: 2" in out
    assert "Statfile: BAYES_HAM type: database; learned: 4" in out
    assert int(re.search(r"Total tokens: (\d+)", out).group(1)) > 500


def test_clear_errors(aliasd_cli, tmp_path):
    proc = aliasd_cli("scan", str(tmp_path / "nope.eml"), check=False)
    assert proc.returncode == 1
    assert "cannot read" in proc.stderr and "Traceback" not in proc.stderr
    proc = aliasd_cli("learn-spam", "-q", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 1
    assert "failed: 1" in proc.stdout and "Traceback" not in proc.stderr


def test_scan_many_inputs_in_one_run_text_and_json(aliasd_cli, tmp_path):
    import json

    maildir = make_maildir(tmp_path / "Inbox", HAM[:2])
    mbox = make_mbox(tmp_path / "box.mbox", SPAM[:3])
    plain = tmp_path / "dir"
    plain.mkdir()
    shutil.copy(MAIL / HAM[3], plain / "one.eml")
    single = MAIL / SPAM[3]
    proc = aliasd_cli("scan", "--json", str(single), str(maildir), str(mbox), str(plain), env_extra=ENV)
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 1 + 2 + 3 + 1
    assert rows[0]["file"] == str(single)
    assert [r["file"] for r in rows[3:6]] == [f"{mbox}#1", f"{mbox}#2", f"{mbox}#3"]
    for r in rows:
        assert {"file", "action", "score", "is_spam", "symbols"} <= set(r)
        assert isinstance(r["score"], float) and isinstance(r["is_spam"], bool)
        assert all(set(v) == {"score", "options"} for v in r["symbols"].values())
    pharmacy = rows[3]  # spam_pharmacy.eml, the first message of the mbox
    assert "AL_PHARMA_SUBJ" in pharmacy["symbols"]
    # its Received header: handed over from an address without a reverse-DNS name
    assert pharmacy["symbols"]["RDNS_NONE"]["options"] == ["83.12.44.9"]
    # the client as the MTA named it (--ip, --hostname) decides over the headers
    named = aliasd_cli("scan", "--json", "--ip", "83.12.44.9", "--hostname", "mail.example.ru",
                       str(MAIL / "spam_pharmacy.eml"), env_extra=ENV)
    assert "RDNS_NONE" not in json.loads(named.stdout)["symbols"]
    # stored mail's envelope sender is its Return-Path unless --from says otherwise
    stored = tmp_path / "stored.eml"
    stored.write_bytes(b"Return-Path: <bounce-7@lists.other.example>\n" + (MAIL / HAM[3]).read_bytes())
    recorded = json.loads(aliasd_cli("scan", "--json", str(stored), env_extra=ENV).stdout)
    assert recorded["symbols"]["FROM_NEQ_ENVFROM"]["options"][1] == "bounce-7@lists.other.example"
    sender = re.search(rb"^From:.*?<?([^<>\s]+@[^<>\s]+)>?\s*$", (MAIL / HAM[3]).read_bytes(), re.M).group(1)
    told = json.loads(aliasd_cli("scan", "--json", "--from", sender.decode(), str(stored), env_extra=ENV).stdout)
    assert "FROM_NEQ_ENVFROM" not in told["symbols"]

    # text: one rspamc block per message, a blank line between blocks
    proc = aliasd_cli("scan", str(mbox), str(tmp_path / "gone.eml"), check=False, env_extra=ENV)
    assert proc.returncode == 1  # something could not be read; the rest was scanned
    assert "cannot read" in proc.stderr and "gone.eml" in proc.stderr
    blocks = proc.stdout.strip().split("\n\n")
    assert len(blocks) == 3
    assert all(b.splitlines()[0].startswith(f"Results for file: {mbox}#") for b in blocks)
    assert all("Action: " in b and "Score: " in b for b in blocks)


def test_stat_reads_the_counters_without_loading_the_rule_files(aliasd_cli, tmp_path):
    broken = tmp_path / "broken.cf"
    broken.write_text("body\n")  # a line that does not parse: loading the file warns
    env = {**ENV, "ALIASD_SCANNER_RULES": str(broken)}
    # separate processes: the rule files are read once per process
    proc = aliasd_cli("scan", "-", input=(MAIL / "ham_family.eml").read_text(), env_extra=env,
                      subprocess_run=True)
    assert "rule file:" in proc.stderr and "body needs a rule name" in proc.stderr
    proc = aliasd_cli("stat", env_extra=env, subprocess_run=True)
    assert "Messages scanned: 1" in proc.stdout
    assert "rule file:" not in proc.stderr


def test_an_mbox_is_split_only_at_its_separator_lines(aliasd_cli, tmp_path):
    """A body line starting with "From " that mboxcl2 writers and exports leave unescaped
    stays in its message; only "From " lines carrying the delivery date start one."""
    import json

    from aliasd.cli.mbox import message_spans, read_span

    first = (MAIL / "ham_colleague.eml").read_bytes().rstrip(b"\n")
    second = (MAIL / "ham_family.eml").read_bytes().rstrip(b"\n")
    unescaped = b"\n\nFrom the desk of the director: the budget is attached.\nRegards"
    box = tmp_path / "exported.mbox"
    box.write_bytes(
        b"From alice@example.org  Thu Aug 22 13:17:22 2002\n" + first + unescaped + b"\n\n"
        + b"From - Mon Jan  1 00:00:00 +0000 2024\r\n" + second + b"\n\n"
    )
    assert [read_span(box, s) for s in message_spans(box)] == [first + unescaped + b"\n", second + b"\n"]

    rows = [json.loads(line) for line in aliasd_cli("scan", "--json", str(box), env_extra=ENV).stdout.splitlines()]
    assert [r["file"] for r in rows] == [f"{box}#1", f"{box}#2"]
    learned = summary(aliasd_cli("learn-ham", "--quiet", str(box), env_extra=ENV).stdout)
    assert learned["learned"] == 2 and learned["failed"] == 0

    # one stored message with its separator line is one message, named by its file
    single = tmp_path / "one.eml"
    single.write_bytes(b"From alice@example.org Thu Aug 22 13:17:22 2002\n" + first + unescaped + b"\n")
    rows = [json.loads(line) for line in aliasd_cli("scan", "--json", str(single), env_extra=ENV).stdout.splitlines()]
    assert [r["file"] for r in rows] == [str(single)]

"""aliasd learn-spam | learn-ham | scan | stat: the scanner from the command line,
printing what rspamc prints (``scan --json``: one JSON object per message, for scripts)."""

from __future__ import annotations

import collections
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import click

from aliasd.cli.common import echo_err, state
from aliasd.cli.mbox import message_spans, read_span, starts_as_mbox
from aliasd.scanner import LearnOutcome, ScannerError, ScanRequest, build_scanner
from aliasd.scanner.message import recorded_envelope_from
from aliasd.scanner.result import Action, ScanResult

LEARN_BATCH = 100  # messages per database transaction when learning


def _maildir_files(path: Path) -> list[Path]:
    files: list[Path] = []
    for sub in ("cur", "new"):
        d = path / sub
        if d.is_dir():
            files.extend(sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")))
    return files


class Source:
    """One learnable input: a message file, or one message of an mbox."""

    def __init__(self, label: str, loader) -> None:
        self.label = label
        self.load = loader


def collect(paths: tuple[str, ...]) -> tuple[list[Source], list[str]]:
    """Expand files, Maildirs (cur/ and new/), plain directories and mbox files into
    messages. Returns the messages and the problems found on the way."""
    sources: list[Source] = []
    problems: list[str] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            if (path / "cur").is_dir() or (path / "new").is_dir():
                files = _maildir_files(path)
            else:
                files = sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            for f in files:
                sources.extend(_file_sources(f, problems))
        elif path.is_file():
            sources.extend(_file_sources(path, problems))
        else:
            problems.append(f"{name}: no such file or directory")
    return sources, problems


def _file_sources(path: Path, problems: list[str]) -> list[Source]:
    if starts_as_mbox(path):
        try:
            spans = message_spans(path)
        except OSError as exc:
            problems.append(f"{path}: cannot read mbox: {exc.strerror or exc}")
            return []
        if len(spans) > 1:
            return [
                Source(f"{path}#{i + 1}", lambda s=span: read_span(path, s))
                for i, span in enumerate(spans)
            ]
        return [Source(str(path), lambda s=spans[0]: read_span(path, s))]
    return [Source(str(path), path.read_bytes)]


def _batches(sources: list[Source], size: int) -> Iterator[list[Source]]:
    for i in range(0, len(sources), size):
        yield sources[i : i + size]


def _learn(paths: tuple[str, ...], is_spam: bool, quiet: bool) -> None:
    st = state()
    sources, problems = collect(paths)
    for problem in problems:
        echo_err(f"warning: {problem}")
    settings = st.settings
    db = st.database() if settings.scanner_backend == "bundled" else None
    scanner = build_scanner(settings, db)
    totals: collections.Counter[str] = collections.Counter()
    totals[LearnOutcome.FAILED.value] += len(problems)
    many = getattr(scanner, "learn_many", None)
    label = "learning spam" if is_spam else "learning ham"
    started = time.monotonic()
    with click.progressbar(
        length=len(sources), label=label, file=sys.stderr, show_pos=True
    ) if not quiet else _NullBar() as bar:
        for batch in _batches(sources, LEARN_BATCH if many else 1):
            messages: list[bytes] = []
            for src in batch:
                try:
                    messages.append(src.load())
                except OSError as exc:
                    echo_err(f"warning: {src.label}: {exc}")
                    totals[LearnOutcome.FAILED.value] += 1
            try:
                if many:
                    outcomes = many(messages, is_spam)
                else:
                    outcomes = [scanner.learn(m, is_spam) for m in messages]
            except ScannerError as exc:
                raise click.ClickException(str(exc)) from exc
            totals.update(o.value for o in outcomes)
            bar.update(len(batch))
    close = getattr(scanner, "close", None)
    if close:
        close()
    elapsed = time.monotonic() - started
    click.echo(
        f"learned: {totals[LearnOutcome.LEARNED.value]}, "
        f"relearned: {totals[LearnOutcome.RELEARNED.value]}, "
        f"duplicates: {totals[LearnOutcome.DUPLICATE.value]}, "
        f"failed: {totals[LearnOutcome.FAILED.value]} "
        f"({elapsed:.1f} s)"
    )
    useful = totals[LearnOutcome.LEARNED.value] + totals[LearnOutcome.RELEARNED.value]
    if not useful and not totals[LearnOutcome.DUPLICATE.value]:
        raise SystemExit(1)


class _NullBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int) -> None:
        return None


_paths = click.argument("paths", nargs=-1, required=True, type=click.Path())
_quiet = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")


@click.command("learn-spam")
@_paths
@_quiet
def learn_spam(paths: tuple[str, ...], quiet: bool) -> None:
    """Learn messages as spam: files, Maildirs (cur/ and new/), directories, mbox files."""
    _learn(paths, True, quiet)


@click.command("learn-ham")
@_paths
@_quiet
def learn_ham(paths: tuple[str, ...], quiet: bool) -> None:
    """Learn messages as ham: files, Maildirs (cur/ and new/), directories, mbox files."""
    _learn(paths, False, quiet)


@click.command("scan")
@click.argument("paths", nargs=-1, required=True, type=click.Path(allow_dash=True))
@click.option("--from", "envelope_from", default=None,
              help="Envelope sender (MAIL FROM); default: the message's Return-Path.")
@click.option("--rcpt", multiple=True, help="Envelope recipient (RCPT TO); repeatable.")
@click.option("--ip", "client_addr", default=None, help="Address of the sending client.")
@click.option("--hostname", "client_name", default=None,
              help="The MTA's name for the client ('unknown': no reverse DNS).")
@click.option("--helo", default=None, help="HELO name of the sending client.")
@click.option("--site", "alias_site", default=None, help="The site the alias was given to.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per message and line.")
def scan(
    paths: tuple[str, ...],
    envelope_from: str | None,
    rcpt: tuple[str, ...],
    client_addr: str | None,
    client_name: str | None,
    helo: str | None,
    alias_site: str | None,
    as_json: bool,
) -> None:
    """Scan messages and print one result per message as rspamc does: files, '-' (standard
    input), directories, Maildirs (cur/ and new/) and mbox files, in one run. Exits 1 when
    some input could not be read (the rest is still scanned)."""
    sources: list[Source] = []
    problems: list[str] = []
    files = tuple(p for p in paths if p != "-")
    if "-" in paths:
        data = sys.stdin.buffer.read()
        sources.append(Source("stdin", lambda: data))
    found, problems = collect(files) if files else ([], [])
    sources.extend(found)
    for problem in problems:
        echo_err(f"warning: cannot read {problem}")
    st = state()
    settings = st.settings
    db = st.database() if settings.scanner_backend == "bundled" else None
    scanner = build_scanner(settings, db)
    unreadable = len(problems)
    try:
        for n, src in enumerate(sources):
            try:
                raw = src.load()
            except OSError as exc:
                echo_err(f"warning: {src.label}: cannot read: {exc.strerror or exc}")
                unreadable += 1
                continue
            started = time.monotonic()
            try:
                result = scanner.scan(ScanRequest(
                    message=raw, recipients=list(rcpt),
                    envelope_from=recorded_envelope_from(raw) if envelope_from is None else envelope_from,
                    client_addr=client_addr, client_name=client_name, helo=helo,
                    alias_site=alias_site,
                ))
            except ScannerError as exc:
                raise click.ClickException(f"scan failed: {exc}") from exc
            elapsed = time.monotonic() - started
            if as_json:
                click.echo(json.dumps(_as_dict(src.label, result, elapsed)))
            else:
                if n:
                    click.echo("")  # a blank line between blocks, as rspamc prints
                _print_block(src.label, result, elapsed)
    finally:
        close = getattr(scanner, "close", None)
        if close:
            close()
    if unreadable:
        raise SystemExit(1)


def _as_dict(label: str, result: ScanResult, elapsed: float) -> dict:
    return {
        "file": label,
        "action": result.action.value,
        "score": result.score,
        "required_score": result.required_score,
        "is_spam": result.is_spam,
        "symbols": {s.name: {"score": s.score, "options": list(s.options)} for s in result.symbols},
        "message_id": result.message_id.strip("<>") if result.message_id else None,
        "seconds": round(elapsed, 4),
    }


def _print_block(label: str, result: ScanResult, elapsed: float) -> None:
    click.echo(f"Results for file: {label} ({elapsed:.3f} seconds)")
    click.echo("[Metric: default]")
    click.echo(f"Action: {result.action.value}")
    click.echo(f"Spam: {'true' if result.is_spam else 'false'}")
    click.echo(f"Score: {result.score:.2f} / {result.required_score:.2f}")
    for sym in sorted(result.symbols, key=lambda s: s.name):
        opts = "[" + ", ".join(sym.options) + "]" if sym.options else ""
        click.echo(f"Symbol: {sym.name} ({sym.score:.2f}){opts}")
    if result.message_id:
        click.echo(f"Message-ID: {result.message_id.strip('<>')}")


@click.command("stat")
def stat() -> None:
    """Print scanner statistics as 'rspamc stat' does."""
    st = state()
    settings = st.settings
    try:
        if settings.scanner_backend == "bundled":
            from aliasd.scanner.bundled import read_stats

            # the counters live in the database: no need to load the rule files
            stats = read_stats(st.database())
        else:
            stats = build_scanner(settings, None).stats()
    except ScannerError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - database down and the like
        raise click.ClickException(f"cannot read statistics: {exc}") from exc
    by_action = {a: stats.get("scanned:" + a.value, 0) for a in Action}
    total = sum(by_action.values())

    def pct(n: int) -> str:
        return f"{n}, {100.0 * n / total if total else 0.0:.2f}%"

    click.echo("Results for command: stat")
    click.echo(f"Messages scanned: {total}")
    for action in (
        Action.REJECT,
        Action.SOFT_REJECT,
        Action.REWRITE_SUBJECT,
        Action.ADD_HEADER,
        Action.GREYLIST,
        Action.NO_ACTION,
    ):
        click.echo(f"Messages with action {action.value}: {pct(by_action[action])}")
    spam = sum(by_action[a] for a in (Action.ADD_HEADER, Action.REWRITE_SUBJECT, Action.SOFT_REJECT, Action.REJECT))
    click.echo(f"Messages treated as spam: {pct(spam)}")
    click.echo(f"Messages treated as ham: {pct(total - spam)}")
    learned_spam = stats.get("bayes_learned_spam", 0)
    learned_ham = stats.get("bayes_learned_ham", 0)
    click.echo(f"Messages learned: {stats.get('learned', learned_spam + learned_ham)}")
    backend = "database" if settings.scanner_backend == "bundled" else "rspamd"
    tokens = stats.get("tokens", 0)
    click.echo(f"Statfile: BAYES_SPAM type: {backend}; learned: {learned_spam}")
    click.echo(f"Statfile: BAYES_HAM type: {backend}; learned: {learned_ham}")
    click.echo(f"Total tokens: {tokens}")
    click.echo(f"Total learns: {learned_spam + learned_ham}")


def register(group: click.Group) -> None:
    for command in (learn_spam, learn_ham, scan, stat):
        group.add_command(command)

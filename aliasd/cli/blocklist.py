"""aliasd blocklist list | add | disable | enable | export | write | import"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterator
from typing import NoReturn

import click
from sqlalchemy.orm import Session

from aliasd.cli.common import RECORD_ID, fail_on_domain_errors, state
from aliasd.core import blocking
from aliasd.core.bounded_lines import clip
from aliasd.core.ordinary_mail import why_too_broad
from aliasd.postfix import log_hits, publisher, table_import
from aliasd.postfix.ordinary_check import rules_matching_ordinary_mail
from aliasd.postfix.postmap import check_rule_line, postfix_client_config_dir
from aliasd.postfix.table import render_from_database, rule_line
from aliasd.postfix.table_parse import split_pattern


@click.group("blocklist")
def blocklist_group() -> None:
    """Sender blocks written to Postfix's header_checks table."""


def _rule_dict(rule) -> dict:
    return {
        "id": rule.id,
        "kind": rule.kind,
        "value": rule.value,
        "pattern": rule.pattern,
        "reject_text": rule.reject_text,
        "source": rule.source,
        "enabled": rule.enabled,
        "hits": rule.hits,
        "created_at": rule.created_at.isoformat() if rule.created_at else None,
        "last_hit_at": rule.last_hit_at.isoformat() if rule.last_hit_at else None,
        "note": rule.note,
    }


def _report(result: publisher.PublishResult) -> None:
    """Say what publishing did; a refused rule or failed reload is an error exit."""
    what = "written" if result.changed else "unchanged"
    click.echo(f"{result.path}: {what}, {result.rules} rules", err=True)
    if result.reloaded:
        click.echo("Postfix reloaded", err=True)
    problems = [r.reason for r in result.refused]
    if result.reload_error:
        problems.append(f"the table is in place but Postfix was not reloaded: {result.reload_error}")
    if problems:
        raise click.ClickException("\n".join(problems))


def _publish(force_reload: bool = False) -> None:
    """Publish the table now (``blocklist write``)."""
    st = state()
    try:
        result = publisher.publish(st.settings, st.database(), force_reload=force_reload)
    except publisher.HeaderChecksError as exc:
        _refused_table(exc)
    except OSError as exc:
        raise click.ClickException(f"cannot write {st.settings.effective_blocklist_file}: {exc}") from exc
    _report(result)


def _refused_table(exc: publisher.HeaderChecksError) -> NoReturn:
    details = "\n".join("  " + p for p in exc.problems)
    raise click.ClickException(f"{exc}\n{details}") from exc


def _published() -> None:
    """Report the publishing the last commit started (the session listener's)."""
    outcome = publisher.wait_for_publish(state().settings)
    if isinstance(outcome, publisher.HeaderChecksError):
        _refused_table(outcome)
    if isinstance(outcome, OSError):
        raise click.ClickException(f"cannot write the table: {outcome}")
    if isinstance(outcome, Exception):
        raise click.ClickException(f"the table was not published: {outcome}")
    if outcome is not None:
        _report(outcome)


@contextlib.contextmanager
def _rules_session(write: bool) -> Iterator[Session]:
    """A unit of work on the rules. Its commit publishes the table (the publisher's
    session listener); the outcome is reported here. With --no-write nothing is
    published."""
    with state().database().session() as session:
        if not write:
            publisher.hold_publishing(session)
        yield session
    if write and publisher.publish_requested(session):
        _published()


write_option = click.option(
    "--write/--no-write", default=True, show_default=True,
    help="Rewrite the header_checks file (and reload Postfix) afterwards.",
)  # fmt: skip


@blocklist_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include disabled rules.")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(show_all: bool, as_json: bool) -> None:
    """Rules (tab-separated: id, enabled, source, hits, created, pattern, reject text)."""
    with state().database().session() as session:
        rules = blocking.list_rules(session, enabled_only=not show_all)
        if as_json:
            click.echo(json.dumps([_rule_dict(r) for r in rules], indent=2))
            return
        for r in rules:
            click.echo(
                f"{r.id}\t{'on' if r.enabled else 'off'}\t{r.source}\t{r.hits}"
                f"\t{r.created_at:%Y-%m-%d}\t{r.pattern}\t{r.reject_text}"
            )


@blocklist_group.command("add")
@click.argument("value")
@click.option("--regex", is_flag=True, help="VALUE is a pcre pattern /.../flags, not a domain.")
@click.option("--note")
@click.option("--force", is_flag=True,
              help="Block even a served, mailbox or autoblock_exempt_domains domain.")
@write_option
@fail_on_domain_errors
def add_cmd(value: str, regex: bool, note: str | None, force: bool, write: bool) -> None:
    """Block a sender domain for everyone (or, with --regex, add a raw pattern)."""
    st = state()
    with _rules_session(write) as session:
        if regex:
            rule = _add_regex(session, value, note, force)
        else:
            rule = blocking.block_domain(session, st.settings, value, source="manual", note=note,
                                         force=force)
        click.echo(f"{rule.id}\t{rule_line(rule.pattern, rule.reject_text)}")


def _add_regex(session, value: str, note: str | None, force: bool = False):
    st = state()
    if not value.startswith("/"):
        raise click.ClickException("write the pattern as /pattern/flags")
    body, rest, _delim, closed = split_pattern(value)
    if not closed:
        raise click.ClickException("the pattern has no closing '/'")
    config_dir = postfix_client_config_dir(st.settings.data_dir)
    problems = check_rule_line(f"/{body}/{rest} REJECT x", config_dir)
    if problems:
        raise click.ClickException("Postfix refuses the pattern: " + "; ".join(problems))
    pattern = f"/{body}/{rest}"
    broad = rules_matching_ordinary_mail([pattern], config_dir)
    if broad:
        raise click.ClickException(f"not added: {why_too_broad(pattern, broad[0])}")
    return blocking.add_regex_rule(session, st.settings, body, rest, source="manual", note=note,
                                   force=force)


def _set_enabled(rule_ids: tuple[int, ...], enabled: bool, write: bool,
                 force: bool = False) -> None:
    with _rules_session(write) as session:
        for rule_id in rule_ids:
            rule = blocking.set_enabled(session, state().settings, rule_id, enabled, force=force)
            click.echo(f"{rule.id}\t{'enabled' if enabled else 'disabled'}\t{rule.pattern}")


@blocklist_group.command("disable")
@click.argument("rule_ids", type=RECORD_ID, nargs=-1, required=True)
@write_option
@fail_on_domain_errors
def disable_cmd(rule_ids: tuple[int, ...], write: bool) -> None:
    """Stop applying rules (kept, so their ids stay reserved)."""
    _set_enabled(rule_ids, False, write)


@blocklist_group.command("enable")
@click.argument("rule_ids", type=RECORD_ID, nargs=-1, required=True)
@click.option("--force", is_flag=True,
              help="Enable even a rule naming a served, mailbox or autoblock_exempt_domains domain.")
@write_option
@fail_on_domain_errors
def enable_cmd(rule_ids: tuple[int, ...], force: bool, write: bool) -> None:
    """Apply disabled rules again."""
    _set_enabled(rule_ids, True, write, force)


@blocklist_group.command("export")
@click.option(
    "--format", "fmt", type=click.Choice(["header_checks", "json", "csv"]),
    default="header_checks", show_default=True,
)  # fmt: skip
@click.option("--all", "show_all", is_flag=True, help="Include disabled rules (json/csv).")
def export_cmd(fmt: str, show_all: bool) -> None:
    """Print the rules: as a header_checks table (what aliasd writes), JSON or CSV."""
    with state().database().session() as session:
        if fmt == "header_checks":
            click.echo(render_from_database(session), nl=False)
            return
        rules = [_rule_dict(r) for r in blocking.list_rules(session, enabled_only=not show_all)]
    if fmt == "json":
        click.echo(json.dumps(rules, indent=2))
    else:
        fields = ["id", "kind", "value", "pattern", "reject_text", "source", "enabled", "hits",
                  "created_at", "last_hit_at", "note"]  # fmt: skip
        writer = csv.DictWriter(sys.stdout, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rules)


@blocklist_group.command("write")
@click.option("--reload", "force_reload", is_flag=True, help="Reload Postfix even if unchanged.")
def write_cmd(force_reload: bool) -> None:
    """Rewrite the header_checks file from the database: checked by postmap, renamed
    into place, then the reload command runs."""
    _publish(force_reload=force_reload)


@blocklist_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Only report; change nothing.")
@write_option
def import_cmd(path: str, dry_run: bool, write: bool) -> None:
    """Import an existing header_checks pcre table (UTF-8). Each line Postfix would skip
    or not apply is reported with its number and the repaired rule; repaired rules are
    imported, the ones matching ordinary mail disabled. Lines over the length limit, and
    rules aliasd cannot hold, are reported and skipped; a file that is not UTF-8 is
    refused whole."""
    st = state()
    config_dir = postfix_client_config_dir(st.settings.data_dir)
    try:
        table = table_import.read_table_file(path, config_dir)
    except table_import.TableEncodingError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror or exc}") from exc
    plan = table_import.plan_import(table, config_dir)
    for line_no, reason in table.unparsable:
        click.echo(f"line {line_no}: not imported: {reason}")
    for rule in table.rules:
        if rule.line_no in plan.refused:
            click.echo(f"line {rule.line_no}: not imported: {plan.refused[rule.line_no]}")
        elif rule.defective:
            status = "skipped by Postfix" if rule.skipped_by_postfix else "defective"
            click.echo(f"line {rule.line_no}: {status}: {'; '.join(rule.problems)}")
            click.echo(f"    repaired: {clip(rule.repaired_line, 300)}")
    skipped = table.skipped_lines
    click.echo(
        f"{len(table.rules)} rules read; Postfix skips {len(skipped)}"
        + (f" (lines {', '.join(map(str, skipped))})" if skipped else "")
        + f"; {len(table.defective)} defective in all"
    )
    if dry_run:
        return
    with _rules_session(write) as session:
        outcome = table_import.import_rules(session, st.settings, plan, path)
        for line_no, reason in outcome.failed:
            click.echo(f"line {line_no}: not imported: {reason}")
        click.echo(f"{outcome.imported} rules imported"
                   + (f"; {outcome.present} already in the blocklist" if outcome.present else ""))


@blocklist_group.command("hits")
@click.argument("maillog", type=click.Path(exists=True, dir_okay=False))
def hits_cmd(maillog: str) -> None:
    """Count header_checks refusals logged by Postfix in MAILLOG since the last run
    (run it from cron; the sender_access map counts its own hits)."""
    st = state()
    added = log_hits.collect_log_hits(st.settings, maillog, st.database())
    total = sum(added.values())
    detail = ", ".join(f"rule {rid}: {n}" for rid, n in sorted(added.items()))
    click.echo(f"{total} new hits" + (f" ({detail})" if detail else ""))


def register(group: click.Group) -> None:
    group.add_command(blocklist_group)

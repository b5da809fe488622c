"""aliasd blocklist list | add | disable | enable | export | write | import"""

from __future__ import annotations

import csv
import json
import sys

import click

from aliasd.cli.common import fail_on_domain_errors, state
from aliasd.core import blocking
from aliasd.postfix import header_checks as hc


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


def _write(force_reload: bool = False) -> None:
    """Rewrite the live table; a refused table or failed reload is an error exit."""
    st = state()
    try:
        result = hc.sync_blocklist(st.settings, st.database(), force_reload=force_reload)
    except hc.HeaderChecksError as exc:
        details = "\n".join("  " + p for p in exc.problems)
        raise click.ClickException(f"{exc}\n{details}") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write {st.settings.effective_blocklist_file}: {exc}") from exc
    what = "written" if result.changed else "unchanged"
    click.echo(f"{result.path}: {what}, {result.rules} rules", err=True)
    if result.reload_error:
        raise click.ClickException(
            f"the table is in place but Postfix was not reloaded: {result.reload_error}"
        )
    if result.reloaded:
        click.echo("Postfix reloaded", err=True)


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
    with st.database().session() as session:
        if regex:
            rule = _add_regex(session, value, note, force)
        else:
            rule = blocking.block_domain(session, st.settings, value, source="manual", note=note,
                                         force=force)
        click.echo(f"{rule.id}\t{hc.rule_line(rule.pattern, rule.reject_text)}")
    if write:
        _write()


def _add_regex(session, value: str, note: str | None, force: bool = False):
    st = state()
    if not value.startswith("/"):
        raise click.ClickException("write the pattern as /pattern/flags")
    body, rest, _delim, closed = hc.split_pattern(value)
    if not closed:
        raise click.ClickException("the pattern has no closing '/'")
    line = f"/{body}/{rest} REJECT x"
    problems = hc.check_rule_line(line, hc.postfix_client_config_dir(st.settings.data_dir))
    if problems:
        raise click.ClickException("Postfix refuses the pattern: " + "; ".join(problems))
    return blocking.add_regex_rule(session, st.settings, body, rest, source="manual", note=note,
                                   force=force)


def _set_enabled(rule_ids: tuple[int, ...], enabled: bool, write: bool) -> None:
    with state().database().session() as session:
        for rule_id in rule_ids:
            rule = blocking.set_enabled(session, rule_id, enabled)
            click.echo(f"{rule.id}\t{'enabled' if enabled else 'disabled'}\t{rule.pattern}")
    if write:
        _write()


@blocklist_group.command("disable")
@click.argument("rule_ids", type=int, nargs=-1, required=True)
@write_option
@fail_on_domain_errors
def disable_cmd(rule_ids: tuple[int, ...], write: bool) -> None:
    """Stop applying rules (kept, so their ids stay reserved)."""
    _set_enabled(rule_ids, False, write)


@blocklist_group.command("enable")
@click.argument("rule_ids", type=int, nargs=-1, required=True)
@write_option
@fail_on_domain_errors
def enable_cmd(rule_ids: tuple[int, ...], write: bool) -> None:
    """Apply disabled rules again."""
    _set_enabled(rule_ids, True, write)


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
            click.echo(hc.render_from_database(session), nl=False)
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
    _write(force_reload=force_reload)


@blocklist_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Only report; change nothing.")
@write_option
def import_cmd(path: str, dry_run: bool, write: bool) -> None:
    """Import an existing header_checks pcre table. Each rule Postfix would skip or not
    apply is reported with its line number and the repaired rule; repaired rules are
    imported (ones matching ordinary mail are imported disabled)."""
    st = state()
    config_dir = hc.postfix_client_config_dir(st.settings.data_dir)
    with open(path, "rb") as fh:
        text = fh.read().decode("utf-8", "replace")
    report = hc.parse_table(text)
    hc.apply_postfix_verdict(report, hc.postmap_problems(path, config_dir))
    for line_no, reason in report.unparsable:
        click.echo(f"line {line_no}: not imported: {reason}")
    refused: list[int] = []
    for rule in report.rules:
        if not rule.refuses:
            refused.append(rule.line_no)
            click.echo(f"line {rule.line_no}: not imported: its action "
                       f"{rule.action.split(' ', 1)[0]!r} does not refuse mail")
            continue
        # Postfix has the last word on the repaired rule too.
        verdict = hc.check_rule_line(rule.repaired_line, config_dir)
        if verdict:
            refused.append(rule.line_no)
            click.echo(f"line {rule.line_no}: not imported: Postfix refuses the repair: {'; '.join(verdict)}")
            continue
        if rule.defective:
            status = "skipped by Postfix" if rule.skipped_by_postfix else "defective"
            click.echo(f"line {rule.line_no}: {status}: {'; '.join(rule.problems)}")
            click.echo(f"    repaired: {rule.repaired_line}")
    skipped = report.skipped_lines
    click.echo(
        f"{len(report.rules)} rules read; Postfix skips {len(skipped)}"
        + (f" (lines {', '.join(map(str, skipped))})" if skipped else "")
        + f"; {len(report.defective)} defective in all"
    )
    if dry_run:
        return
    imported = 0
    with st.database().session() as session:
        for rule in report.rules:
            if rule.line_no in refused:
                continue
            before = blocking.find_pattern(session, rule.pattern)
            if before is not None:
                continue
            blocking.add_regex_rule(
                session, st.settings, rule.body, rule.flags, source="imported",
                enabled=not rule.too_broad, wanted_id=rule.original_id,
                note=f"imported from {path} line {rule.line_no}",
            )  # fmt: skip
            imported += 1
    click.echo(f"{imported} rules imported")
    if write:
        _write()


@blocklist_group.command("hits")
@click.argument("maillog", type=click.Path(exists=True, dir_okay=False))
def hits_cmd(maillog: str) -> None:
    """Count header_checks refusals logged by Postfix in MAILLOG since the last run
    (run it from cron; the sender_access map counts its own hits)."""
    st = state()
    added = hc.collect_log_hits(st.settings, maillog, st.database())
    total = sum(added.values())
    detail = ", ".join(f"rule {rid}: {n}" for rid, n in sorted(added.items()))
    click.echo(f"{total} new hits" + (f" ({detail})" if detail else ""))


def register(group: click.Group) -> None:
    group.add_command(blocklist_group)

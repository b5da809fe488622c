"""Importing a foreign header_checks table: read it safely, let Postfix judge it, add
the rules.

Reading is streamed in bounded memory (aliasd.core.bounded_lines): a line over the
limit is reported by number and skipped. A file that is not UTF-8 (a byte-order mark of
UTF-16 or UTF-32, NUL bytes, invalid UTF-8) is refused as a whole, before anything is
imported: read as UTF-8, a UTF-16 list turns into patterns like ``/\\//`` that match
nearly every message. Postfix has the last word twice: on the original lines (which of
them it would skip) and on every repaired rule (it must load, and must not match an
ordinary header line, else it is imported disabled)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.core import blocking
from aliasd.core.bounded_lines import MAX_LINE_BYTES, OverlongLine, clip, read_lines
from aliasd.postfix.ordinary_check import rules_matching_ordinary_mail
from aliasd.postfix.postmap import age_file, postmap_problems, write_temp_table
from aliasd.postfix.table_parse import (
    ParsedRule,
    ParsedTable,
    TableParser,
    apply_postfix_verdict,
    mark_too_broad,
)

_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_UTF8_BOM = b"\xef\xbb\xbf"


class TableEncodingError(ValueError):
    """The file is not UTF-8 text; nothing was imported."""


@dataclass
class ImportPlan:
    table: ParsedTable
    refused: dict[int, str] = field(default_factory=dict)  # rule line → why not imported

    @property
    def importable(self) -> list[ParsedRule]:
        return [r for r in self.table.rules if r.line_no not in self.refused]


def _decode(number: int, data: bytes) -> str:
    if number == 1:
        for bom, name in _BOMS:
            if data.startswith(bom):
                raise TableEncodingError(
                    f"the file is {name} (it starts with a {name} byte-order mark); save it "
                    "as UTF-8 and import it again. Nothing was imported."
                )
        if data.startswith(_UTF8_BOM):
            data = data[len(_UTF8_BOM) :]
    if b"\x00" in data:
        raise TableEncodingError(
            f"line {number} contains NUL bytes: the file is not UTF-8 text (UTF-16 without "
            "a byte-order mark, or binary); save it as UTF-8. Nothing was imported."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 4].hex(" ")
        raise TableEncodingError(
            f"line {number} is not valid UTF-8 (bytes {bad} at byte {exc.start + 1}); save "
            "the file as UTF-8. Nothing was imported."
        ) from exc


def read_table_file(path: str, config_dir: str, max_bytes: int = MAX_LINE_BYTES) -> ParsedTable:
    """Parse the file at ``path`` line by line, and mark the rules Postfix skips (asked
    on a copy holding only the lines read, so postmap never sees an overlong one)."""
    parser = TableParser()
    fd, copy = tempfile.mkstemp(suffix=".pcre")
    try:
        with open(path, "rb") as src, os.fdopen(fd, "w", encoding="utf-8") as out:
            for number, data in read_lines(src, max_bytes):
                if isinstance(data, OverlongLine):
                    parser.skip(number, data.reason)
                    out.write("\n")  # keeps postmap's line numbers those of the file
                    continue
                line = _decode(number, data)
                parser.feed(number, line)
                out.write(line + "\n")
        age_file(copy)
        apply_postfix_verdict(parser.table, postmap_problems(copy, config_dir))
    finally:
        os.unlink(copy)
    return parser.table


def plan_import(table: ParsedTable, config_dir: str) -> ImportPlan:
    """Which parsed rules can be imported, and which import disabled (too broad)."""
    plan = ImportPlan(table)
    for rule in table.rules:
        if not rule.refuses:
            word = rule.action.split(" ", 1)[0]
            plan.refused[rule.line_no] = f"its action {clip(word)!r} does not refuse mail"
    candidates = plan.importable
    if not candidates:
        return plan
    # Postfix has the last word on the repaired rules: one postmap run for all of them.
    tmp = write_temp_table([r.repaired_line for r in candidates])
    try:
        problems = postmap_problems(tmp, config_dir)
    finally:
        os.unlink(tmp)
    for number, message in problems:
        if number and 0 < number <= len(candidates):
            rule = candidates[number - 1]
            plan.refused[rule.line_no] = f"Postfix refuses the repair: {message}"
        elif not number:
            raise RuntimeError(f"postmap cannot check the rules: {message}")
    candidates = plan.importable
    broad = rules_matching_ordinary_mail([r.pattern for r in candidates], config_dir)
    for index, header in broad.items():
        mark_too_broad(candidates[index], header)
    return plan


@dataclass
class ImportOutcome:
    imported: int = 0
    present: int = 0  # the same pattern is already a rule
    failed: list[tuple[int, str]] = field(default_factory=list)


def import_rules(
    session: Session, settings: Settings, plan: ImportPlan, source_name: str
) -> ImportOutcome:
    """Add the importable rules (the caller commits). A rule the core refuses is reported
    with its line number and the others are imported."""
    outcome = ImportOutcome()
    for rule in plan.importable:
        if blocking.find_pattern(session, rule.pattern) is not None:
            outcome.present += 1
            continue
        try:  # the core refuses before writing anything: no savepoint needed
            blocking.add_regex_rule(
                session, settings, rule.body, rule.flags, source="imported",
                enabled=not rule.too_broad, wanted_id=rule.original_id,
                note=f"imported from {clip(source_name)} line {rule.line_no}",
            )  # fmt: skip
        except blocking.BlockError as exc:
            outcome.failed.append((rule.line_no, str(exc)))
            continue
        outcome.imported += 1
    return outcome

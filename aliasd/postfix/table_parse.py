"""Reading a foreign header_checks pcre table for import, the way Postfix's dict_pcre
reads it, so that a list copied from a web page (non-breaking spaces, a lost closing
delimiter) is diagnosed per line and a repaired rule is offered. Pure: no files, no
database; aliasd.postfix.table_import drives it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aliasd.core.bounded_lines import clip
from aliasd.core.ordinary_mail import ordinary_header_matched, why_too_broad
from aliasd.core.pcre_syntax import PCRE_FLAGS
from aliasd.postfix.table import clean_text

# Postfix splits on ASCII blanks only; these look like blanks on a web page but are not.
_UNICODE_BLANKS = "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000\ufeff"
_UNICODE_BLANK_RE = re.compile(f"[{_UNICODE_BLANKS}]")
_ACTION_WORD = re.compile(
    r"(REJECT|DISCARD|DUNNO|OK|IGNORE|HOLD|WARN|INFO|PREPEND|REPLACE|REDIRECT|FILTER|BCC|"
    r"STRIP|PASS|FREEZE|[245]\d\d)\b",
    re.I,
)
_ID_IN_TEXT = re.compile(r"\bid\s*=\s*(\d+)", re.I)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass
class ParsedRule:
    line_no: int
    original: str
    body: str  # the pattern between the delimiters, repaired
    flags: str  # repaired flags
    action: str  # the repaired action text, e.g. 'REJECT "Plz stop sending SPAM id= 1 "'
    original_id: int | None  # "id=N" found in the reject text
    problems: list[str] = field(default_factory=list)  # why the original line is defective
    skipped_by_postfix: bool = False  # Postfix ignores the original rule entirely
    too_broad: bool = False  # the repaired rule matches ordinary mail: import disabled

    @property
    def pattern(self) -> str:
        return f"/{self.body}/{self.flags}"

    @property
    def repaired_line(self) -> str:
        return f"{self.pattern} {self.action}".rstrip()

    @property
    def defective(self) -> bool:
        return bool(self.problems)

    @property
    def refuses(self) -> bool:
        """The action refuses mail for good (REJECT or a 5xx code): the only kind aliasd's
        table holds. A WARN, PREPEND, DISCARD ... rule imported as REJECT would change
        what it does, so those are not imported; nor is a 4xx rule, which defers mail
        (the sender retries) where REJECT would bounce it."""
        word = self.action.split(" ", 1)[0].upper()
        return word == "REJECT" or bool(re.fullmatch(r"5\d\d", word))


@dataclass
class ParsedTable:
    rules: list[ParsedRule] = field(default_factory=list)
    unparsable: list[tuple[int, str]] = field(default_factory=list)  # lines not imported

    @property
    def skipped_lines(self) -> list[int]:
        return [r.line_no for r in self.rules if r.skipped_by_postfix]

    @property
    def defective(self) -> list[ParsedRule]:
        return [r for r in self.rules if r.defective]


def split_pattern(line: str) -> tuple[str, str, str, bool]:
    """(body, rest after the closing delimiter, delimiter, closed?) the way dict_pcre
    scans: the first character is the delimiter, a backslash escapes the next one."""
    delim = line[0]
    i = 1
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        if line[i] == delim:
            return line[1:i], line[i + 1 :], delim, True
        i += 1
    return line[1:], "", delim, False


def _repair_unclosed(text: str) -> tuple[str, str]:
    """A pattern that lost its closing delimiter: the body runs up to the blank run before
    the action word (REJECT, ...)."""
    match = re.search(rf"[\s{_UNICODE_BLANKS}]+(?={_ACTION_WORD.pattern})", text)
    if match:
        return text[: match.start()], text[match.end() :]
    return text.rstrip(" \t" + _UNICODE_BLANKS), ""


def parse_table(text: str) -> ParsedTable:
    """Read a whole header_checks pcre table held in memory (see TableParser)."""
    parser = TableParser()
    for line_no, line in enumerate(text.split("\n"), start=1):
        parser.feed(line_no, line)
    return parser.table


class TableParser:
    """Reads a header_checks pcre table one physical line at a time, diagnosing each rule
    the way Postfix reads it. Only newline ends a line: a carriage return inside one is
    an ordinary character for Postfix (one rule, not two); trailing blanks and a CR
    before the newline are dropped, as Postfix's reader drops them."""

    def __init__(self) -> None:
        self.table = ParsedTable()
        self._depth = 0  # if/endif nesting

    def skip(self, line_no: int, reason: str) -> None:
        self.table.unparsable.append((line_no, reason))

    def feed(self, line_no: int, line: str) -> None:
        line = line.rstrip(" \t\r\n\v\f")
        reason = self._parse(line_no, line)
        if reason:
            self.skip(line_no, reason)

    def _parse(self, line_no: int, line: str) -> str | None:
        """Adds the rule; returns why the line is not imported, if it is not."""
        table = self.table
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            return None
        if line[0] in " \t":
            return "continuation lines are not supported on import"
        if stripped.lower().startswith(("if ", "if!", "endif")):
            self._depth += -1 if stripped.lower().startswith("endif") else 1
            self._depth = max(self._depth, 0)
            return "if/endif blocks are not supported on import"
        if self._depth:
            # Alone, a rule from inside the block would match more than it did there.
            return "inside an if/endif block"
        body, rest, delim, closed = split_pattern(stripped)
        problems: list[str] = []
        skipped = False
        if not closed:
            skipped = True
            problems.append(f'no closing regexp delimiter "{delim}": Postfix ignores this rule')
            body, rest = _repair_unclosed(body)
            flags = ""
        else:
            flag_match = re.match(r"[^ \t]*", rest)
            raw_flags = flag_match.group(0) if flag_match else ""
            rest = rest[len(raw_flags) :]
            # What Postfix took as flags may really be blanks from a web page, then text.
            clean_flags = _UNICODE_BLANK_RE.split(raw_flags, maxsplit=1)
            flags = clean_flags[0]
            if len(clean_flags) > 1:
                rest = " " + clean_flags[1] + rest
            bad = [c for c in raw_flags if c not in PCRE_FLAGS]
            if bad:
                skipped = True
                if any(_UNICODE_BLANK_RE.match(c) for c in bad):
                    problems.append(
                        "a non-breaking space follows the closing delimiter; Postfix reads it "
                        "as an unknown regexp option and skips this rule"
                    )
                else:
                    problems.append(
                        f"unknown regexp option {''.join(bad)!r}: Postfix skips this rule"
                    )
                flags = "".join(c for c in flags if c in PCRE_FLAGS)
        if _UNICODE_BLANK_RE.search(body):
            problems.append(
                "the pattern contains a non-breaking space, which only matches that exact "
                "character; repaired to a plain space"
            )
            body = _UNICODE_BLANK_RE.sub(" ", body)
        if delim != "/":
            body = re.sub(r"(?<!\\)/", r"\\/", body.replace("\\" + delim, delim))
        action = clean_text(rest)
        if _UNICODE_BLANK_RE.search(rest) and not skipped:
            word = rest.strip(" \t").split(" ")[0] if rest.strip(" \t") else ""
            if _UNICODE_BLANK_RE.search(word):
                problems.append(
                    "non-breaking spaces in the action: Postfix loads the rule but cleanup "
                    "does not recognise the action word, so matching mail is not refused"
                )
        if not action:
            problems.append("the rule has no action")
            action = "REJECT"
        original_id = None
        id_match = _ID_IN_TEXT.search(action)
        if id_match:
            original_id = int(id_match.group(1))
        if not body:
            return "empty pattern"
        if _CONTROL.search(body):
            # Postfix would take the character literally; aliasd's table holds one line of
            # printable text per rule, and no header line carries such a character.
            return (
                "the pattern contains a tab or control character "
                f"({clip(_CONTROL.search(body).group(0))}), not imported: {clip(line)}"
            )
        rule = ParsedRule(
            line_no=line_no,
            original=line,
            body=body,
            flags=flags,
            action=action,
            original_id=original_id,
            problems=problems,
            skipped_by_postfix=skipped,
        )
        header = ordinary_header_matched(rule.pattern)
        if header is not None:
            mark_too_broad(rule, header)
        table.rules.append(rule)
        return None


def mark_too_broad(rule: ParsedRule, header: str) -> None:
    """The rule matches an ordinary header line: imported disabled, and said why."""
    if not rule.too_broad:
        rule.too_broad = True
        rule.problems.append(
            f"{why_too_broad(rule.pattern, header)}; imported disabled, review it before "
            "enabling"
        )


def apply_postfix_verdict(report: ParsedTable, problems: list[tuple[int | None, str]]) -> None:
    """Mark rules Postfix itself skipped (postmap's warnings on the original file are the
    authority; the local parser only explains and repairs)."""
    by_line = {r.line_no: r for r in report.rules}
    for number, message in problems:
        rule = by_line.get(number or -1)
        if rule is None:
            continue
        if not rule.skipped_by_postfix:
            rule.skipped_by_postfix = True
            rule.problems.insert(0, f"Postfix: {message}")



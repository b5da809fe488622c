"""Rule files in SpamAssassin's syntax (a subset): ``header``, ``body``, ``rawbody``,
``uri``, ``full`` and ``meta`` rules with ``score`` and ``describe``. Both the rules
shipped with aliasd (``aliasd/data/rules/*.cf``) and SpamAssassin's published rules
(Debian's ``spamassassin`` package, ``/usr/share/spamassassin``) load through here.

Patterns are RE2 syntax and run through aliasd/scanner/multimatch.py (hyperscan, or RE2
sets), each text read once for all of its patterns, in time linear in the text whatever
the pattern (Perl's and Python's backtracking engines are not). A line that does not parse, a pattern RE2 cannot
compile (look-arounds, back-references), an ``eval:`` test (code in SpamAssassin's
plugins) that aliasd/scanner/sa_evals.py does not compute, or a meta rule that depends on
one of those is skipped with a reason; a broken file never stops the others from loading."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import re2
import regex

from aliasd.scanner.message import decode_header_value, header_items, parse_address
from aliasd.scanner.multimatch import PatternSet, latin1_options
from aliasd.scanner.relays import Relay, spamassassin_relays
from aliasd.scanner.replace_tags import ReplaceTags
from aliasd.scanner.sa_conditionals import Conditionals
from aliasd.scanner.sa_evals import LEFT_OUT, EvalTest, Facts, parse_eval
from aliasd.scanner.sa_header_evals import FreemailDomains, HeaderFacts

log = logging.getLogger(__name__)

KINDS = ("header", "mimeheader", "body", "rawbody", "uri", "full", "meta")
# SpamAssassin matches body rules against each paragraph and uri rules against each link:
# here they read them joined by newlines, so that ^ and $ mean the start and end of each
# of those, as there. (rawbody rules read 2-4 kB chunks with their line breaks, where ^
# and $ are the chunk's; here the raw text is one chunk.)
LINE_KINDS = ("body", "uri")
# tflags nosubject: a body rule that reads the text without the Subject line before it
BODY_NOSUBJECT = "body_nosubject"
# tflags multiple: SpamAssassin counts each match (up to maxhits) for metas that compare
# counts ("__LOWER_E > 20"); without maxhits it would count on, here at most this many.
MULTIPLE_MAX = 1000
MAX_MIME_PARTS = 100  # MIME parts whose headers mimeheader rules read
SCORE_SET = 2  # SpamAssassin's score sets: 0 plain, 1 network, 2 Bayes, 3 both
# SpamAssassin's score for a rule without a score line: 1.0, -1.0 for a "nice" rule
# (tflags nice: it marks ham). Debian's package ships most rules without their scores
# (sa-update brings those), so most of its rules count 1.0 here.
DEFAULT_SCORE = 1.0
# Pseudo-headers SpamAssassin computes: the relays outside this side (its "external" and,
# without trusted_networks set, "untrusted" chain are the same) are computed here; rules
# on the others are skipped rather than matched against an empty value.
RELAY_PSEUDO = ("x-spam-relays-external", "x-spam-relays-untrusted")
# Names SpamAssassin's get() reads as more than one header (HeaderView.value computes them)
PSEUDO_HEADERS = {name.lower(): name for name in ("ALL", "ToCc", "MESSAGEID", "EnvelopeFrom")}
_PSEUDO = ("x-spam-relays-", "x-spam-", "x-mailer-lid", "x-languages", "x-relays-")

# Header rules whose pattern RE2 cannot run (look-arounds, back-references: 20 % of
# SpamAssassin's header rules, among them the dynamic-rDNS and HELO tests) run on the
# ``regex`` module, a backtracking engine: each on at most this much of the header, and
# stopped after BACKTRACK_TIMEOUT seconds of the thread's CPU time (a pattern that
# backtracks catastrophically then does not hit) so that no rule can hold a message up.
BACKTRACK_SCAN = 4000
BACKTRACK_TIMEOUT = 0.02
# The engine stops by the clock; calls it stopped before they had used their CPU time are
# made again (within_cpu), at most this many times in all.
CLOCK_RETRIES = 4
# Text rules (body, rawbody, uri, full) RE2 cannot run go the same way, over the bytes the
# multi-pattern pass read (SpamAssassin's erectile-drug, body-part, diet, invisible-text
# and some link tests): their relaxed pattern joins the kind's pattern set, and where it
# matched, the backtracking engine tries the rule only where the relaxed pattern starts a
# match (a match of the rule is one of the relaxed pattern's, so that is exact), instead of
# reading the whole text: every "<font " wakes the first pass of the test for mixed-case
# font tags, in many messages. A message's backtracking over text stops after TEXT_BACKTRACK_BUDGET
# seconds in all, so however many such rules a hostile text wakes, it costs at most that;
# the rules not yet tried then do not hit. Both limits count this thread's CPU time in the
# engine, not the clock: the clock also runs while other threads scan (the milter's), the
# garbage collector works or the system runs other processes, and the same message then
# got another verdict under load (within_cpu makes the engine's own stop, by the clock,
# one by CPU time).
TEXT_BACKTRACK_BUDGET = 0.05
TEXT_BACKTRACK_STARTS = 8  # places tried one by one; past that, one search over the rest
# ... unless that first pass is longer than this: the FUZZY_* rules (2,900-9,400 characters
# once ReplaceTags spells every letter's look-alikes) made the body's hyperscan pass 40 µs
# a message slower (a scan is 1.5 ms) and hit 10 of 1,542 spam and one ham in
# cross-validation; every other such rule's first pass is under 2,600 characters.
TEXT_BACKTRACK_MAX_PREFILTER = 2600
# What the multi-pattern engine cannot take in reasonable time. Some of SpamAssassin's
# patterns, once their tags are replaced, are 40-220 kB long (hyperscan refuses them, and
# RE2 matches them slowly) or chain many bounded repeats of large alternations (hyperscan
# took 0.3-7.7 s to compile each of the ten over 700 characters with 8 or more here, the
# others at most 0.15 s; short ones with many repeats of small classes compile at once).
MAX_PATTERN = 20_000
MAX_BOUNDED_REPEATS = 8
LONG_PATTERN = 700
_BOUNDED_REPEAT = re.compile(r"\{\d*,\d+\}")
_PERL_RE = re.compile(r"^\s*(?:m?/(.*)/|m\{(.*)\}|m!(.*)!|m#(.*)#)([a-z]*)\s*$", re.S)
_COMMENT = re.compile(r"(?<!\\)#.*")  # SpamAssassin: '#' starts a comment, '\#' is one
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,80}$")
_UNSUPPORTED = re.compile(r"\(\?<?[=!]|\(\?>|\\[1-9]|\\[GZhHKRvVXCE]|\(\?[a-z]*x|\(\?\||[*+?}][+]")
_META_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\d+(?:\.\d+)?)|(&&|\|\||[!<>=]=|[-+*/()<>!]))")


@dataclass
class Rule:
    name: str
    kind: str
    pattern: str = ""  # RE2 syntax, flags inline
    backtracking: object = None  # what RE2 cannot run: a time-bounded ``regex`` pattern
    prefilter: str = ""  # ... and an RE2 pattern matching at least what it matches ("" none)
    negate: bool = False  # header !~
    header: str = ""  # header spec: "subject", "from:addr", "ALL", "exists:x-foo"
    if_unset: str | None = None
    expr: str = ""  # meta: a Python expression over rule names
    deps: tuple[str, ...] = ()
    test: EvalTest | None = None  # kind "eval": SpamAssassin's eval: test (aliasd/scanner/sa_evals.py)


@dataclass
class LoadReport:
    files: int = 0
    rules: int = 0  # rules that will run
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (where, name, why)
    warnings: list[str] = field(default_factory=list)  # lines that did not parse
    unused: int = 0  # loaded, but nothing scores them (see RuleSet._live): not run
    unread: int = 0  # lines in if/ifplugin blocks SpamAssassin 4.0.1 would not read

    def summary(self) -> str:
        reasons: dict[str, int] = {}
        for _, _, why in self.skipped:
            key = why.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        why = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items(), key=lambda x: -x[1]))
        return (f"{self.rules} rules loaded from {self.files} files; {len(self.skipped)} skipped"
                + (f" ({why})" if why else "") + f"; {len(self.warnings)} lines did not parse"
                + (f"; {self.unused} loaded rules not run (no score, no meta reads them)"
                   if self.unused else "")
                + (f"; {self.unread} lines in if/ifplugin blocks for other SpamAssassin "
                   "versions or plugins not read" if self.unread else ""))

    def skipped_evals(self) -> str:
        """The ``eval:`` tests still skipped, by test name, most rules first."""
        counts: dict[str, int] = {}
        for _, name, why in self.skipped:
            if why.startswith("eval: left out"):
                key = f"{name} left out"
            elif why.startswith("eval:"):
                key = why.rpartition(": ")[2]
            else:
                continue
            counts[key] = counts.get(key, 0) + 1
        return ", ".join(f"{k} ({n})" for k, n in sorted(counts.items(), key=lambda x: (-x[1], x[0])))


def _perl_parts(spec: str) -> tuple[str, str] | None:
    """``/pattern/flags`` (or m{...}, m!...!) as (pattern, flags); None if not one."""
    m = _PERL_RE.match(spec)
    if not m:
        return None
    return next(g for g in m.groups()[:4] if g is not None), m.group(5)


def perl_to_re2(spec: str, multiline: bool = False) -> str:
    """``/pattern/flags`` (or m{...}, m!...!) as an RE2 pattern with inline flags (``m``
    added with ``multiline``). Raises ValueError for what RE2 cannot do."""
    parts = _perl_parts(spec)
    if parts is None:
        raise ValueError("not a /pattern/")
    body, flags = parts
    if "x" in flags:
        raise ValueError("unsupported: /x flag")
    if _UNSUPPORTED.search(body):
        raise ValueError("unsupported: look-around, back-reference or Perl-only escape")
    body = body.replace("\\/", "/").replace("\\z", "\\z")
    # Perl allows {,n}; RE2 reads it literally either way: fine. \Z (end, before a
    # final newline) is close enough to \z for one header or line.
    inline = "".join(f for f in "ism" if f in flags or (f == "m" and multiline))
    return (f"(?{inline})" if inline else "") + body


def _prefilter(spec: str, multiline: bool = False) -> str:
    """RE2's first pass for a backtracking pattern, "" when RE2 cannot run even that."""
    parts = _perl_parts(spec)
    if parts is None or "x" in parts[1]:
        return ""
    body, flags = parts[0].replace("\\/", "/"), parts[1]
    inline = "".join(f for f in "ism" if f in flags or (f == "m" and multiline))
    pattern = (f"(?{inline})" if inline else "") + relaxed_pattern(body)
    return "" if _check_re2(pattern) else pattern


def within_cpu(run, stop: float):
    """``run(timeout)``, a call of the backtracking engine, until ``stop`` on this
    thread's CPU clock (``time.thread_time``). The engine stops by the wall clock; a
    call it stopped before the CPU time was spent (the system ran other processes
    meanwhile) is made again with what is left, so that a busy machine changes no
    result. TimeoutError once the CPU time is spent."""
    for _ in range(CLOCK_RETRIES):
        left = stop - time.thread_time()
        if left <= 0:  # (and the engine would not read 0 or less as a timeout)
            break
        try:
            return run(left)
        except TimeoutError:
            continue
    raise TimeoutError


def bounded_search(pattern, text: str) -> bool:
    """Whether a backtracking pattern matches ``text``; one that runs past
    BACKTRACK_TIMEOUT of CPU time does not."""
    try:
        return within_cpu(lambda left: pattern.search(text, timeout=left),
                          time.thread_time() + BACKTRACK_TIMEOUT) is not None
    except TimeoutError:
        return False


def _backtracking(spec: str, *, multiline: bool = False, as_bytes: bool = False) -> object | None:
    """A Perl ``/pattern/flags`` compiled for the ``regex`` module (which reads Perl's
    look-arounds and back-references), or None when it cannot be. ``as_bytes``: a bytes
    pattern over UTF-8 text, byte by byte as hyperscan reads the text rules (``\\xE9``
    one byte, a letter outside ASCII its UTF-8 bytes); ``multiline`` as perl_to_re2."""
    parts = _perl_parts(spec)
    if parts is None:
        return None
    body = parts[0].replace("\\/", "/").replace("\\z", "\\Z")
    flags = regex.M if multiline else 0
    for letter, flag in (("i", regex.I), ("s", regex.S), ("m", regex.M), ("x", regex.X)):
        if letter in parts[1]:
            flags |= flag
    try:
        return regex.compile(body.encode() if as_bytes else body, flags | regex.V0)
    except (regex.error, ValueError, OverflowError, RecursionError):
        return None


def relaxed_pattern(body: str) -> str:
    """A Perl pattern with what RE2 cannot run taken out so that it matches at least
    whatever the original matches: look-arounds dropped, back-references read as "any
    text", atomic groups and possessive quantifiers as ordinary ones. RE2 runs it as a
    cheap first pass; only where it matches does the backtracking engine have to look."""
    out: list[str] = []
    i, n = 0, len(body)
    while i < n:
        c = body[i]
        if c == "\\" and i + 1 < n:
            if body[i + 1] in "123456789":
                out.append("(?s:.*?)")
            else:
                out.append(body[i:i + 2])
            i += 2
        elif c == "[":
            j = _class_end(body, i)
            out.append(body[i:j])
            i = j
        elif body.startswith(("(?=", "(?!", "(?<=", "(?<!"), i):
            i = _group_end(body, i)
        elif body.startswith("(?>", i):
            out.append("(?:")
            i += 3
        elif c in "+*?}" and i + 1 < n and body[i + 1] == "+":
            out.append(c)
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _class_end(body: str, i: int) -> int:
    """The index after the character class starting at ``body[i] == '['``."""
    j = i + 1
    if j < len(body) and body[j] == "^":
        j += 1
    if j < len(body) and body[j] == "]":
        j += 1
    while j < len(body) and body[j] != "]":
        j += 2 if body[j] == "\\" else 1
    return min(j + 1, len(body))


def _group_end(body: str, i: int) -> int:
    """The index after the group opening at ``body[i] == '('``."""
    depth, j = 0, i
    while j < len(body):
        c = body[j]
        if c == "\\":
            j += 2
            continue
        if c == "[":
            j = _class_end(body, j)
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth == 0:
                return j + 1
        j += 1
    return len(body)


def _too_costly(pattern: str) -> str | None:
    if len(pattern) > MAX_PATTERN:
        return f"unsupported: pattern of {len(pattern)} characters (at most {MAX_PATTERN})"
    repeats = len(_BOUNDED_REPEAT.findall(pattern)) if len(pattern) > LONG_PATTERN else 0
    if repeats >= MAX_BOUNDED_REPEATS:
        return (f"unsupported: {repeats} bounded repeats in {len(pattern)} characters"
                f" (fewer than {MAX_BOUNDED_REPEATS} past {LONG_PATTERN})")
    return None


def _check_re2(pattern: str) -> str | None:
    opts = re2.Options()
    opts.log_errors = False
    try:
        re2.compile(pattern, opts)
    except Exception as exc:  # noqa: BLE001 - re2 raises its own error types
        return f"unsupported: {str(exc)[:80]}"
    return None


def _parse_score(values: list[str]) -> float:
    nums = [float(v) for v in values if not v.startswith("#")]
    if not nums:
        raise ValueError("no score")
    return nums[SCORE_SET] if len(nums) >= 4 else nums[0]


def _meta_expr(text: str) -> tuple[str, tuple[str, ...]]:
    """SpamAssassin's meta expression as Python: names stay names, && || ! become
    and/or/not. Anything else in it is an error."""
    out: list[str] = []
    names: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _META_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"bad meta expression near {text[pos:pos + 20]!r}")
        pos = m.end()
        name, num, op = m.groups()
        if name:
            names.append(name)
            out.append(f"v_{name}")
        elif num:
            out.append(num)
        else:
            out.append({"&&": " and ", "||": " or ", "!": " not "}.get(op, op))
    expr = "".join(out).strip()
    compile(expr, "<meta>", "eval")  # raises SyntaxError on a broken expression
    return expr, tuple(dict.fromkeys(names))


class RuleSet:
    """Loaded rules, their scores and descriptions, ready to match."""

    def __init__(self) -> None:
        self.rules: dict[str, Rule] = {}
        self.scores: dict[str, float] = {}
        self.descriptions: dict[str, str] = {}
        self.nice: set[str] = set()  # tflags nice: evidence of ham
        # tflags net: network tests (DNS lists, Razor, DCC), which never run here, as in
        # SpamAssassin without network tests (-L): a meta reading one reads "no hit"
        self.net: set[str] = set()
        self.multiple: dict[str, int] = {}  # tflags multiple: rule -> most hits counted
        self.nosubject: set[str] = set()  # tflags nosubject: body rules without the Subject
        self.freemail = FreemailDomains()  # freemail_domains, for the FreeMail tests
        self.replace_tags = ReplaceTags()
        # pattern rules as written (directive, test, where), for replace_rules to expand
        self._sources: dict[str, tuple[str, str, str]] = {}
        self._expanded: set[str] = set()
        self._header_evals: list[tuple[str, EvalTest]] = []
        self._mime_headers: dict[str, list[Rule]] = {}
        self.report = LoadReport()
        self._skip_kinds: frozenset[str] = frozenset()
        self._sets: dict[str, list[tuple[object, list[str]]]] = {}
        self._headers: dict[str, list[Rule]] = {}
        self._header_sets: dict[str, tuple[PatternSet, list[Rule]]] = {}
        self._absent: dict[str, list[str]] = {}
        self._negated: dict[str, list[str]] = {}
        self._exists: list[tuple[str, bool, tuple[str, ...]]] = []
        self._header_plan: list[tuple] = []
        self._evals: list[tuple[str, EvalTest]] = []
        self._backtracking: list[tuple] = []
        self._counted: list[tuple[str, str, object, int]] = []  # (rule, text, pattern, cap)
        self._meta_fn = lambda hits, counts: hits

    # --- loading --------------------------------------------------------------------
    def load_paths(self, paths: Iterable[str | Path]) -> RuleSet:
        self.add_paths(paths)
        return self.compile()

    def add_paths(self, paths: Iterable[str | Path], *, skip_kinds: frozenset[str] = frozenset()) -> None:
        """Read rule files (a directory: its ``*.cf``) without compiling; rules of the
        kinds in ``skip_kinds`` are skipped with a reason."""
        self._skip_kinds = skip_kinds
        try:
            self._add_paths(paths)
            self._expand_tags()  # a directory is one configuration: its rules come out expanded
        finally:
            self._skip_kinds = frozenset()

    def _add_paths(self, paths: Iterable[str | Path]) -> None:
        for path in paths:
            p = Path(path)
            files = sorted(p.glob("*.cf")) if p.is_dir() else [p]
            for f in files:
                try:
                    text = f.read_bytes().decode("utf-8", "replace")
                except OSError as exc:
                    self.report.warnings.append(f"{f}: cannot read: {exc.strerror or exc}")
                    continue
                self.report.files += 1
                self.load_text(text, str(f))

    def load_text(self, text: str, source: str = "<rules>") -> None:
        """One rule file: its lines in order, inside the if/ifplugin blocks that
        SpamAssassin would read (:mod:`aliasd.scanner.sa_conditionals`)."""
        blocks = Conditionals()
        for lineno, line in enumerate(text.splitlines(), 1):
            line = _COMMENT.sub("", line).replace("\\#", "#").strip()
            if not line:
                continue
            where = f"{source}:{lineno}"
            directive, *argument = line.split(None, 1)
            try:
                if blocks.directive(directive.lower(), argument[0] if argument else ""):
                    continue
            except ValueError as exc:
                self.report.warnings.append(f"{where}: {exc}")
                continue
            if not blocks.reading:
                self.report.unread += 1
                continue
            try:
                self._line(line, where)
            except (ValueError, SyntaxError, IndexError) as exc:
                self.report.warnings.append(f"{where}: {exc}")
        if blocks.unclosed():
            self.report.warnings.append(f"{source}: {blocks.unclosed()} if/ifplugin "
                                        "block(s) without endif")

    def _line(self, line: str, where: str) -> None:
        parts = line.split(None, 2)
        directive = parts[0].lower()
        if directive == "score":
            if len(parts) < 3 or not _NAME.match(parts[1]):
                raise ValueError("score needs a rule name and a number")
            self.scores[parts[1]] = _parse_score(parts[2].split())
            return
        if directive == "tflags":
            flags = parts[2].split() if len(parts) >= 3 else []
            if "nice" in flags:
                self.nice.add(parts[1])
            if "net" in flags:
                self.net.add(parts[1])
            if "multiple" in flags:
                caps = [f[8:] for f in flags if f.startswith("maxhits=") and f[8:].isdigit()]
                self.multiple[parts[1]] = max(1, min(int(caps[0]) if caps else MULTIPLE_MAX, MULTIPLE_MAX))
            if "nosubject" in flags:
                self.nosubject.add(parts[1])
            return
        if directive == "describe":
            if len(parts) >= 2:
                self.descriptions[parts[1]] = parts[2] if len(parts) > 2 else ""
            return
        if directive == "freemail_domains":
            for bad in self.freemail.add(line.split(None, 1)[1] if len(parts) > 1 else ""):
                self.report.warnings.append(f"{where}: not a freemail domain: {bad[:80]}")
            return
        if directive.startswith("replace_") and self.replace_tags.setting(
                directive, line.split(None, 1)[1] if len(parts) > 1 else ""):
            return
        if directive not in KINDS:
            return  # other configuration (tflags, lang, if/endif, report templates)
        if len(parts) < 3 or not _NAME.match(parts[1]):
            raise ValueError(f"{directive} needs a rule name and a test")
        name, test = parts[1], parts[2].strip()
        if directive in self._skip_kinds:
            self._skip(where, name, f"off: {directive} rules not loaded from here")
            return
        if test.startswith("eval:"):
            self._sources.pop(name, None)
            if directive not in ("header", "body", "rawbody", "uri", "full"):
                self._skip(where, name, f"eval: not implemented: {directive} tests")
                return
            found = parse_eval(test, header=directive == "header")
            if isinstance(found, str):
                self._skip(where, name, found)
            elif name in LEFT_OUT:
                self._skip(where, name, f"eval: left out: {LEFT_OUT[name]}")
            else:
                self.rules[name] = Rule(name, "header_eval" if directive == "header" else "eval", test=found)
            return
        if directive == "meta":
            expr, deps = _meta_expr(test)
            self._sources.pop(name, None)  # a later definition wins, "meta X 0" too
            self.rules[name] = Rule(name, "meta", expr=expr, deps=deps)
            return
        self._sources[name] = (directive, test, where)
        rule = Rule(name, directive)
        if directive == "header":
            if test.startswith("exists:"):
                # exists:X is SpamAssassin's defined(get(X)): a pseudo-header exists when
                # any header it reads does (exists:ToCc when To or Cc does)
                low = test[7:].strip().rstrip(":").lower()
                rule.header = "exists:" + PSEUDO_HEADERS.get(low, low)
                self.rules[name] = rule
                return
            m = re.match(r"^([\w:-]+)\s*([=!])~\s*(.+?)(?:\s+\[if-unset:\s*(.*)\])?$", test, re.S)
            if not m:
                raise ValueError("header rule is not 'Name =~ /pattern/'")
            hname, op, spec, unset = m.groups()
            low = hname.lower()
            if low.startswith(_PSEUDO) and low not in RELAY_PSEUDO:
                self._skip(where, name, f"unsupported: pseudo-header {hname}")
                return
            rule.header = hname if hname in PSEUDO_HEADERS.values() else low
            rule.negate = op == "!"
            rule.if_unset = unset
            test = spec
        elif directive == "mimeheader":
            # a header of any MIME part, the message's own included (MIMEHeader.pm)
            m = re.match(r"^([\w-]+)(:raw)?\s*=~\s*(.+)$", test, re.S)
            if not m:
                raise ValueError("mimeheader rule is not 'Name =~ /pattern/'")
            rule.header = m.group(1).lower() + (m.group(2) or "")
            test = m.group(3)
        try:
            rule.pattern = perl_to_re2(test, multiline=directive in LINE_KINDS)
            err = _check_re2(rule.pattern)
        except ValueError as exc:
            err = str(exc)
        if err and err.startswith("unsupported"):
            text_rule = directive not in ("header", "mimeheader")
            prefilter = _prefilter(test, multiline=directive in LINE_KINDS)
            # a text rule only with a first pass, and a cheap one: the backtracking
            # engine must not read every message's whole text
            if not text_rule or 0 < len(prefilter) <= TEXT_BACKTRACK_MAX_PREFILTER:
                rule.backtracking = _backtracking(test, multiline=directive in LINE_KINDS, as_bytes=text_rule)
            elif prefilter:
                err += (f" (its RE2 first pass of {len(prefilter)} characters is over "
                        f"{TEXT_BACKTRACK_MAX_PREFILTER}: too costly on every message)")
            if rule.backtracking is not None:
                err = None
                rule.prefilter = prefilter
        if not err:
            err = _too_costly(rule.prefilter if rule.backtracking is not None else rule.pattern)
        if err:
            self._skip(where, name, err)
            return
        self.rules[name] = rule

    def header_derived(self, names: Iterable[str]) -> set[str]:
        """Those of ``names`` that read the message's headers: header, mimeheader and
        header ``eval:`` rules, and metas over any of them (transitively)."""
        memo: dict[str, bool] = {}

        def derived(name: str, depth: int) -> bool:
            if name in memo:
                return memo[name]
            rule = self.rules.get(name)
            memo[name] = False  # a cycle reads no header
            if rule is None or depth > 60:
                return False
            memo[name] = rule.kind in ("header", "mimeheader", "header_eval") or (
                rule.kind == "meta" and any(derived(d, depth + 1) for d in rule.deps))
            return memo[name]

        return {n for n in names if derived(n, 0)}

    def _expand_tags(self) -> None:
        """Rules named by ``replace_rules`` read again with their tags replaced (see
        aliasd/scanner/replace_tags.py); what their first reading said is forgotten."""
        for name in sorted(self.replace_tags.rules - self._expanded):
            source = self._sources.get(name)
            if source is None:
                continue  # not (yet) a pattern rule: a later file may define it
            self._expanded.add(name)
            directive, test, where = source
            expanded = self.replace_tags.expand(test)
            if expanded == test:
                continue
            self.report.skipped = [s for s in self.report.skipped if s[1] != name]
            try:
                self._line(f"{directive} {name} {expanded}", where)
            except (ValueError, SyntaxError, IndexError) as exc:
                self.report.warnings.append(f"{where}: {name} with its tags replaced: {exc}")

    def _skip(self, where: str, name: str, why: str) -> None:
        self.report.skipped.append((where, name, why))
        self.rules.pop(name, None)

    def compile(self, cache_dir: str | None = None) -> RuleSet:
        """Ready to match; ``cache_dir`` keeps the compiled pattern databases between
        processes (aliasd/scanner/multimatch.py)."""
        self._expand_tags()
        # metas whose dependencies are missing are disabled, as SpamAssassin does; a
        # network test is not missing but never hits, as in SpamAssassin without them
        changed = True
        while changed:
            changed = False
            for name, rule in list(self.rules.items()):
                if rule.kind == "meta":
                    missing = [d for d in rule.deps if d not in self.rules and d not in self.net]
                    if missing:
                        self._skip("meta", name, f"depends on a skipped or unknown rule: {missing[0]}")
                        changed = True
        live = self._live()
        self.report.unused = len(self.rules) - len(live)
        by_kind: dict[str, list[Rule]] = {}
        self._headers = {}
        self._evals = []
        self._header_evals = []
        self._mime_headers = {}
        for rule in self.rules.values():
            if rule.name not in live:
                continue
            if rule.kind == "header":
                self._headers.setdefault(rule.header, []).append(rule)
            elif rule.kind == "eval":
                self._evals.append((rule.name, rule.test))
            elif rule.kind == "header_eval":
                self._header_evals.append((rule.name, rule.test))
            elif rule.kind == "mimeheader":
                self._mime_headers.setdefault(rule.header, []).append(rule)
            elif rule.kind != "meta":
                kind = BODY_NOSUBJECT if rule.kind == "body" and rule.name in self.nosubject else rule.kind
                by_kind.setdefault(kind, []).append(rule)
        # per kind: one pattern set (a rule RE2 cannot run there by its first pass,
        # confirmed by the backtracking engine where that matched)
        self._sets = {kind: (PatternSet([r.prefilter if r.backtracking is not None else r.pattern for r in rules],
                                        cache_dir=cache_dir),
                             [r.name for r in rules],
                             {i: (re2.compile(r.prefilter.encode(), latin1_options()), r.backtracking)
                              for i, r in enumerate(rules) if r.backtracking is not None})
                      for kind, rules in by_kind.items()}
        # counted again, only when they hit: the text rules with tflags multiple
        # (as bytes, the way the hyperscan pass read them)
        self._counted = [(r.name, kind, _counter(r.pattern) if r.backtracking is None else r.backtracking,
                          self.multiple[r.name])
                         for kind, rules in by_kind.items() for r in rules if r.name in self.multiple]
        # Per header: one pattern set over its rules; what the rules say of an absent
        # header ("" or their if-unset value) is the same for every message: worked out here.
        self._header_sets = {}
        self._absent = {}
        self._negated = {}
        self._backtracking = []
        for spec, rules in list(self._headers.items()):
            slow = [r for r in rules if r.backtracking is not None]
            if slow:
                # RE2 first, over the rules' relaxed patterns at once; the backtracking
                # engine only for those it finds (and the negated ones, and those
                # without a first pass)
                screened = [r for r in slow if r.prefilter and not r.negate]
                always = tuple((r.name, r.backtracking, r.negate) for r in slow if r not in screened)
                self._backtracking.append((
                    spec,
                    PatternSet([r.prefilter for r in screened], cache_dir=cache_dir) if screened else None,
                    tuple((r.name, r.backtracking, r.negate) for r in screened),
                    always,
                    tuple(r.name for r in slow if _unset_hits(r))))
                rules = self._headers[spec] = [r for r in rules if r.backtracking is None]
                if not rules:
                    del self._headers[spec]
                    continue
            if spec.startswith("exists:"):
                continue
            self._header_sets[spec] = (
                PatternSet([r.pattern for r in rules], prefer_hyperscan=len(rules) > 30, cache_dir=cache_dir), rules)
            self._negated[spec] = [r.name for r in rules if r.negate]
            self._absent[spec] = [
                r.name for r in rules
                if (re2.search(r.pattern, r.if_unset or "") is not None) != r.negate
            ]
        self._mime_plan = []
        for spec, rules in self._mime_headers.items():
            fast = [r for r in rules if r.backtracking is None]
            name, _, mod = spec.partition(":")
            self._mime_plan.append((
                name, bool(mod), PatternSet([r.pattern for r in fast], cache_dir=cache_dir) if fast else None,
                [r.name for r in fast], [(r.name, r.backtracking) for r in rules if r.backtracking is not None]))
        self._exists = [(spec[7:], spec[7:] in PSEUDO_HEADERS.values(), tuple(r.name for r in rules))
                        for spec, rules in self._headers.items() if spec.startswith("exists:")]
        self._header_plan = [
            (spec, pset, tuple(r.name for r in rules), frozenset(self._negated[spec]),
             tuple(self._absent[spec]))
            for spec, (pset, rules) in self._header_sets.items()]
        live_rules = {n: r for n, r in self.rules.items() if n in live}
        self._meta_fn = _compile_metas(live_rules, _meta_order(live_rules),
                                       {name for name, _, _, _ in self._counted})
        self.report.rules = len(self.rules)
        return self

    def _live(self) -> set[str]:
        """The rules worth running: those with a score, and what their metas read.
        A sub-rule no loaded meta reads, a rule scored 0 and an unscored T_ (testing)
        rule change no result: SpamAssassin's files hold 870 of those among 1,455
        loadable rules, 126 of them on the Subject alone."""
        live = {n for n in self.rules
                if not n.startswith("__") and self.score_of(n) != 0
                and not (n.startswith("T_") and n not in self.scores)}
        todo = list(live)
        while todo:
            rule = self.rules[todo.pop()]
            for d in rule.deps:
                if d in self.rules and d not in live:
                    live.add(d)
                    todo.append(d)
        return live

    def _match_mime_headers(self, msg) -> set[str]:
        """mimeheader rules: a hit when the header of any MIME part matches."""
        found: set[str] = set()
        plan = self._mime_plan
        for i, part in enumerate(msg.walk()):
            if i >= MAX_MIME_PARTS:
                break
            for name, raw, pset, rules, slow in plan:
                values = part.get_all(name)
                if not values:
                    continue
                text = "\n".join(
                    v if isinstance(v, str) and (raw or "=?" not in v) else (str(v) if raw else decode_header_value(v))
                    for v in values)[:BACKTRACK_SCAN]
                if pset is not None:
                    found.update(rules[j] for j in pset.match(text))
                found.update(rule_name for rule_name, pattern in slow
                             if rule_name not in found and bounded_search(pattern, text))
        return found

    def score_of(self, name: str) -> float:
        if name in self.scores:
            return self.scores[name]
        if name.startswith("__"):
            return 0.0
        if name.startswith("T_"):
            return 0.01
        return -DEFAULT_SCORE if name in self.nice else DEFAULT_SCORE

    # --- matching -------------------------------------------------------------------
    def match(self, texts: dict[str, str | bytes], headers: HeaderView,
              facts: Facts | None = None,
              relay_counts: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)) -> list[str]:
        """Names of the rules that hit (sub-rules starting with __ included); ``eval:``
        tests run when the message's ``facts`` are given (header tests read the
        ``relay_counts``: trusted, untrusted, unparseable relays)."""
        hits: set[str] = set()
        if facts is not None:
            hits.update(name for name, test in self._evals if test(facts))
            if self._header_evals:
                hfacts = HeaderFacts(headers, facts.pm, self.freemail, relay_counts, headers.relays)
                hits.update(name for name, test in self._header_evals if test(hfacts))
            if self._mime_headers:
                hits.update(self._match_mime_headers(facts.pm.msg))
        encoded: dict[str, bytes] = {}

        def as_bytes(kind: str) -> bytes:
            if kind not in encoded:
                text = texts.get(kind, b"")
                encoded[kind] = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
            return encoded[kind]

        spent = 0.0  # CPU seconds this thread spent backtracking over this message's text
        for kind, (pset, names, confirm) in self._sets.items():
            text = texts.get(kind, "")
            if not text:
                continue
            found = pset.match(text)
            for i in [i for i in found if i in confirm]:
                left = TEXT_BACKTRACK_BUDGET - spent
                if left <= 0:
                    found.discard(i)
                    continue
                began = time.thread_time()
                if not _confirmed(*confirm[i], as_bytes(kind), min(left, BACKTRACK_TIMEOUT)):
                    found.discard(i)
                spent += time.thread_time() - began
            hits.update(names[i] for i in found)
        present = headers.names
        for name, pseudo, names in self._exists:
            if headers.value(name) is not None if pseudo else name in present:
                hits.update(names)
        for spec, pset, names, negated, absent in self._header_plan:
            value = headers.value(spec)
            if value is None:
                hits.update(absent)
                continue
            found = pset.match(value)
            if negated:  # rules that hit when their pattern does not
                hits.update(n for i, n in enumerate(names) if (i in found) != (n in negated))
            else:
                hits.update(names[i] for i in found)
        for spec, screen, screened, always, unset_hits in self._backtracking:
            value = headers.value(spec)
            if value is None:
                hits.update(unset_hits)
                continue
            value = value[:BACKTRACK_SCAN]
            todo = [screened[i] for i in screen.match(value)] if screen is not None else []
            hits.update(name for name, pattern, negate in (*todo, *always)
                        if bounded_search(pattern, value) != negate)
        counts: dict[str, int] = {}
        for name, kind, pattern, cap in self._counted:
            if name in hits:
                counts[name] = _count(pattern, as_bytes(kind), cap)
        self._meta_fn(hits, counts)
        return sorted(hits)


def _confirmed(relaxed, pattern, data: bytes, timeout: float) -> bool:
    """Whether a text rule RE2 cannot run matches ``data``: the backtracking ``pattern``
    tried at each place its ``relaxed`` form (RE2) starts a match, left to right."""
    stop = time.thread_time() + timeout  # CPU time of this thread, as the budget above
    pos = 0
    try:
        for _ in range(TEXT_BACKTRACK_STARTS):
            found = relaxed.search(data, pos)
            if found is None:
                return False
            start = found.start()
            if within_cpu(lambda left, at=start: pattern.match(data, at, timeout=left), stop) is not None:
                return True
            pos = start + 1
        return within_cpu(lambda left: pattern.search(data, pos, timeout=left), stop) is not None
    except TimeoutError:
        return False


def _unset_hits(rule: Rule) -> bool:
    """Whether a backtracking header rule hits a message without its header: its
    pattern against the if-unset value (or ""), as SpamAssassin matches it."""
    return bounded_search(rule.backtracking, rule.if_unset or "") != rule.negate


# A pattern without unbounded repeats or repeated groups whose optional parts and
# alternatives give at most this many ways to try a match at one position: the stdlib's
# engine counts its matches in C, in time linear in the text (RE2's Python interface costs
# about 1 µs a match, and SpamAssassin's __LOWER_E, /e/ counted up to 230, hits nearly
# every message).
COUNT_BACKTRACK_PATHS = 4096
_PLAIN_LITERAL = re.compile(rb"(?:\(\?[ms]{1,2}\))?([A-Za-z0-9 ]{1,100})")
_COUNT_TOKEN = re.compile(rb"\\.|\[\^?\]?(?:\\.|[^\]\\])*\]|\(\?|\{(\d*)(,?)(\d*)\}|.", re.S)


def _counter(pattern: str) -> object:
    """What counts a rule's matches: the literal itself when the pattern is one, the
    stdlib's engine where that is safe (see COUNT_BACKTRACK_PATHS), RE2 otherwise; all
    over bytes, as hyperscan reads them."""
    data = pattern.encode()
    literal = _PLAIN_LITERAL.fullmatch(data)
    if literal:  # /e/: counted by bytes.count, in C
        return literal.group(1)
    paths = 1
    after_group = False
    for m in _COUNT_TOKEN.finditer(data):
        token, braces = m.group(0), m.group(1) is not None
        unbounded = token in (b"*", b"+") or (braces and m.group(2) and not m.group(3))
        if unbounded or (after_group and (braces or token == b"?")):
            paths = 0  # unbounded, or a group repeated (its choices multiply): RE2
            break
        after_group = token == b")"
        if token in (b"?", b"|"):
            paths *= 2
        elif braces and m.group(2):
            paths *= int(m.group(3)) - int(m.group(1) or 0) + 1
        if paths > COUNT_BACKTRACK_PATHS:
            paths = 0
            break
    if paths:
        try:
            return re.compile(data.replace(b"\\z", b"\\Z"))
        except (re.error, OverflowError, RecursionError):
            pass
    return re2.compile(data, latin1_options())


def _count(pattern: object, text: bytes, cap: int) -> int:
    """Matches of a rule with tflags multiple, one after another as Perl's //g finds
    them, at most ``cap`` (a backtracking pattern's: those found in BACKTRACK_TIMEOUT,
    at least the one that made it hit)."""
    if isinstance(pattern, bytes):
        return min(text.count(pattern), cap)
    n = 0
    if not isinstance(pattern, regex.Pattern):
        for _ in pattern.finditer(text):
            n += 1
            if n >= cap:
                break
        return n
    # one search after another as finditer's, each in this thread's CPU time (within_cpu)
    stop = time.thread_time() + BACKTRACK_TIMEOUT
    pos = 0
    try:
        while n < cap and pos <= len(text):
            found = within_cpu(lambda left, at=pos: pattern.search(text, at, timeout=left), stop)
            if found is None:
                break
            n += 1
            pos = found.end() if found.end() > found.start() else found.end() + 1
    except TimeoutError:
        n = max(n, 1)
    return n


def _compile_metas(rules: dict[str, Rule], order: list[str], counted: set[str] = frozenset()):
    """All metas as one Python function over the set of hits (and the hit counts of the
    rules in ``counted``), in dependency order: one call per message instead of an eval
    per meta. Only names the parser produced (rule names, numbers, operators) are in the
    generated code."""
    lines = ["def metas(h, c):"]
    names = {d for n in order for d in rules[n].deps} | set(order)
    for n in sorted(names - set(order)):
        lines.append(f"    v_{n} = c.get({n!r}, 0)" if n in counted else f"    v_{n} = {n!r} in h")
    for n in order:
        if "/" not in rules[n].expr:  # and, or, not, + - * and comparisons of bools cannot raise
            lines.append(f"    v_{n} = bool({rules[n].expr})")
        else:
            lines.append("    try:")
            lines.append(f"        v_{n} = bool({rules[n].expr})")
            lines.append("    except (ArithmeticError, TypeError):")
            lines.append(f"        v_{n} = False")
        lines.append(f"    if v_{n}:")
        lines.append(f"        h.add({n!r})")
    lines.append("    return h")
    namespace: dict = {"__builtins__": {"bool": bool, "ArithmeticError": ArithmeticError,
                                        "TypeError": TypeError}}
    exec(compile("\n".join(lines), "<metas>", "exec"), namespace)  # noqa: S102 - built above
    return namespace["metas"]


def _meta_order(rules: dict[str, Rule]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(name: str, depth: int = 0) -> None:
        if state.get(name) == 2 or depth > 50:
            return
        state[name] = 1
        for d in rules[name].deps:
            if rules.get(d) is not None and rules[d].kind == "meta" and state.get(d) != 1:
                visit(d, depth + 1)
        state[name] = 2
        order.append(name)

    for name, rule in rules.items():
        if rule.kind == "meta":
            visit(name)
    return order


class HeaderView:
    """Header values as SpamAssassin's header rules see them. Each header is decoded
    once and each address header parsed once per message, whatever number of rules
    and forms (``From``, ``From:addr``, ``From:name``, ``ALL``) read it."""

    def __init__(self, msg, decode, envelope_from: str = "",
                 relays: Callable[[], list[Relay]] | None = None) -> None:
        self._items = header_items(msg, 200)
        self._decode = decode
        self._env = envelope_from
        self._relays = relays
        self._cache: dict[str, str | None] = {}
        self._decoded: list[str | None] = [None] * len(self._items)
        # one pass over the headers: every rule's lookup is then a dict access
        self._by_name: dict[str, list[int]] = {}
        for i, (k, _) in enumerate(self._items):
            self._by_name.setdefault(k.lower(), []).append(i)

    def exists(self, name: str) -> bool:
        return name.lower() in self._by_name

    def relays(self) -> list[Relay]:
        """The relays outside this side, newest first (empty when not known)."""
        return self._relays() if self._relays is not None else []

    @property
    def names(self) -> dict[str, list[int]]:
        """The message's header names, lower-cased (as keys)."""
        return self._by_name

    def _text(self, i: int) -> str:
        text = self._decoded[i]
        if text is None:
            text = self._decoded[i] = self._decode(self._items[i][1])
        return text

    def _joined(self, name: str) -> str | None:
        key = name + ":"
        if key not in self._cache:
            idx = self._by_name.get(name)
            self._cache[key] = "\n".join(self._text(i) for i in idx) if idx else None
        return self._cache[key]

    def value(self, spec: str) -> str | None:
        if spec in self._cache:
            return self._cache[spec]
        v = self._value(spec)
        self._cache[spec] = v
        return v

    def _value(self, spec: str) -> str | None:
        if spec == "ALL":
            return "\n".join(f"{self._items[i][0]}: {self._text(i)}"
                             for i in range(min(100, len(self._items)))) + "\n"
        if spec == "ToCc":
            vals = [t for t in (self._joined("to"), self._joined("cc")) if t is not None]
            return ", ".join(vals) if vals else None
        if spec == "MESSAGEID":
            vals = [str(self._items[i][1]) for n in ("message-id", "resent-message-id", "x-message-id")
                    for i in self._by_name.get(n, ())]
            return "\n".join(vals) if vals else None
        if spec == "EnvelopeFrom":
            return self._env or None
        if spec in RELAY_PSEUDO:  # the same chain under both names: written once
            if self._relays is None:
                return None
            if "\0relays" not in self._cache:
                self._cache["\0relays"] = spamassassin_relays(self._relays())
            return self._cache["\0relays"]
        name, _, mod = spec.partition(":")
        if mod == "raw":
            idx = self._by_name.get(name)
            return "\n".join(str(self._items[i][1]) for i in idx)[:8000] if idx else None
        text = self._joined(name)
        if text is None or mod not in ("addr", "name"):
            return text
        pair = self._cache.get(name + ":pair")
        if pair is None:
            dname, addr = parse_address(text)
            self._cache[name + ":pair"] = pair = f"{dname}\0{addr}"
        dname, _, addr = pair.partition("\0")
        return addr if mod == "addr" else dname

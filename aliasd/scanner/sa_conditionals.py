"""SpamAssassin's conditional blocks in rule files: ``ifplugin NAME``, ``if EXPR``,
``else`` and ``endif`` (Conf/Parser.pm), so that of a rule defined both with and without
a plugin (``if !plugin(...)`` fallbacks) the definition SpamAssassin itself would read
is the one loaded.

The rules are read as Debian's SpamAssassin 4.0.1 reads them with its default plugin
set (the ``loadplugin`` lines of ``/etc/spamassassin/*.pre``), running local tests only:
``plugin(X)`` is true for those plugins, ``can(X::y)`` for the features and methods that
version has, ``version`` is 4.000001. That holds whether or not aliasd computes a
plugin's ``eval:`` tests; those it does not compute are skipped, each with its reason,
as before. An expression that cannot be read skips its block, with a warning naming
the file and line, as SpamAssassin does."""

from __future__ import annotations

import re

SA_VERSION = 4.000001
PLUGIN = "Mail::SpamAssassin::Plugin::"
# Debian's spamassassin 4.0.1: the plugins its *.pre files load.
LOADED_PLUGINS = frozenset(PLUGIN + name for name in (
    "AskDNS", "AutoLearnThreshold", "Bayes", "BodyEval", "Check", "DKIM", "DMARC",
    "DNSEval", "FreeMail", "HTMLEval", "HTTPSMismatch", "HashBL", "HeaderEval", "ImageInfo",
    "MIMEEval", "MIMEHeader", "Pyzor", "Razor2", "RelayEval", "ReplaceTags", "Rule2XSBody",
    "SPF", "SpamCop", "URIDNSBL", "URIDetail", "URIEval", "VBounce", "WLBLEval",
    "WelcomeListSubject"))
# Renamed plugins, read under their new names (as Parser.pm does).
_RENAMED = {PLUGIN + "Dmarc": PLUGIN + "DMARC",
            PLUGIN + "WhiteListSubject": PLUGIN + "WelcomeListSubject"}
# What ``can(...)`` finds true in that version: Conf's features, and the has_ methods of
# the loaded plugins.
_CONF_FEATURES = (
    "feature_originating_ip_headers", "feature_dns_local_ports_permit_avoid",
    "feature_bayes_auto_learn_on_error", "feature_uri_host_listed", "feature_yesno_takes_args",
    "feature_bug6558_free", "feature_edns", "feature_dns_query_restriction",
    "feature_registryboundaries", "feature_geodb", "feature_dns_block_rule",
    "feature_compile_regexp", "feature_meta_rules_matching", "feature_subjprefix",
    "feature_bayes_stopwords", "feature_get_host", "feature_blocklist_welcomelist",
    "feature_welcomelist_blocklist", "feature_header_address_parser",
    "feature_local_tests_only", "feature_header_first_last", "feature_header_match_many",
    "feature_capture_rules", "has_tflags_nosubject", "has_tflags_nolog",
    "perl_min_version_5010000")
_PLUGIN_METHODS = {
    "AskDNS": ("has_tag_header",),
    "BodyEval": ("has_check_body_length", "has_plaintext_body_sig_ratio"),
    "DKIM": ("has_arc",),
    "DNSEval": ("has_tflags_domains_only", "has_tflags_ips_only"),
    "HashBL": ("has_hashbl_bodyre", "has_hashbl_bodyre_num", "has_hashbl_emails",
               "has_hashbl_uris", "has_hashbl_ignore", "has_hashbl_email_regex",
               "has_hashbl_email_welcomelist", "has_hashbl_email_whitelist", "has_hashbl_tag",
               "has_hashbl_sha256", "has_hashbl_attachments", "has_hashbl_email_domain",
               "has_hashbl_email_domain_alias"),
    "MIMEEval": ("has_check_for_ascii_text_illegal", "has_check_abundant_unicode_ratio",
                 "has_check_qp_ratio"),
    "MIMEHeader": ("has_all_header", "has_tflags_range", "has_tflags_concat",
                   "has_tflags_multiple", "has_capture_rules"),
    "Pyzor": ("has_fork", "has_perl"),
    "Razor2": ("has_fork",),
    "SPF": ("has_check_for_spf_errors", "has_check_spf_skipped_noenvfrom"),
    "URIDNSBL": ("has_tflags_domains_only", "has_subtest_for_ranges", "has_uridnsbl_for_a",
                 "has_uridnsbl_a_ns", "has_tflags_notrim", "has_uridnsbl_skip_mailto"),
    "URIDetail": ("has_host_key",),
}
AVAILABLE = frozenset(
    [f"Mail::SpamAssassin::Conf::{f}" for f in _CONF_FEATURES]
    + [f"{PLUGIN}{p}::{m}" for p, methods in _PLUGIN_METHODS.items() for m in methods])

_TOKEN = re.compile(r"\s*(?:(plugin|can|has)\s*\(\s*([\w:]+)\s*\)|(version|perl_version|"
                    r"local_tests_only)\b|(\d+(?:\.\d+)?)|(&&|\|\||[<>!=]=|[<>()!]))")
_COMPARE = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__,
            "==": float.__eq__, "!=": float.__ne__}
MAX_DEPTH = 32  # brackets and negations nested deeper than SpamAssassin's files ever do


def evaluate(expression: str) -> bool:
    """The truth of an ``if`` line's expression, as that SpamAssassin finds it (a value
    is true when it is not 0). Raises ValueError for one it cannot read."""
    tokens: list[object] = []
    pos, text = 0, expression.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"unreadable 'if' expression at {text[pos:pos + 30]!r}")
        pos = m.end()
        function, argument, variable, number, operator = m.groups()
        if function == "plugin":
            tokens.append(float(_RENAMED.get(argument, argument) in LOADED_PLUGINS))
        elif function in ("can", "has"):
            tokens.append(float(argument in AVAILABLE))
        elif variable == "version":
            tokens.append(SA_VERSION)
        elif variable == "perl_version":
            tokens.append(5.036)
        elif variable == "local_tests_only":
            tokens.append(1.0)  # aliasd runs no network tests
        elif number is not None:
            tokens.append(float(number))
        else:
            tokens.append(operator)
    if not tokens:
        raise ValueError("empty 'if' expression")
    value, used = _disjunction(tokens, 0, 0)
    if used != len(tokens):
        raise ValueError(f"unreadable 'if' expression {text[:60]!r}")
    return value != 0


# A small recursive-descent reading of ! && || comparisons and brackets (Perl's
# precedence), each step returning (value, position of the next token).
def _disjunction(tokens: list[object], at: int, depth: int) -> tuple[float, int]:
    return _joined(tokens, at, depth, "||", _conjunction, lambda a, b: a != 0 or b != 0)


def _conjunction(tokens: list[object], at: int, depth: int) -> tuple[float, int]:
    return _joined(tokens, at, depth, "&&", _comparison, lambda a, b: a != 0 and b != 0)


def _joined(tokens: list[object], at: int, depth: int, operator: str, operand,
            combine) -> tuple[float, int]:
    """``operand (operator operand)*``, left to right."""
    value, at = operand(tokens, at, depth)
    while at < len(tokens) and tokens[at] == operator:
        right, at = operand(tokens, at + 1, depth)
        value = float(combine(value, right))
    return value, at


def _comparison(tokens: list[object], at: int, depth: int) -> tuple[float, int]:
    value, at = _unary(tokens, at, depth)
    if at < len(tokens) and tokens[at] in _COMPARE:
        compare = _COMPARE[tokens[at]]  # type: ignore[index]
        right, at = _unary(tokens, at + 1, depth)
        value = float(compare(value, right))
    return value, at


def _unary(tokens: list[object], at: int, depth: int) -> tuple[float, int]:
    if depth > MAX_DEPTH:
        raise ValueError("'if' expression nested too deep")
    if at >= len(tokens):
        raise ValueError("'if' expression ends too soon")
    token = tokens[at]
    if token == "!":
        value, at = _unary(tokens, at + 1, depth + 1)
        return float(value == 0), at
    if token == "(":
        value, at = _disjunction(tokens, at + 1, depth + 1)
        if at >= len(tokens) or tokens[at] != ")":
            raise ValueError("'if' expression without its closing bracket")
        return value, at + 1
    if isinstance(token, float):
        return token, at + 1
    raise ValueError(f"unexpected {token!r} in 'if' expression")


class Conditionals:
    """The ``if``/``ifplugin`` nesting of one rule file: whether its lines are read."""

    def __init__(self) -> None:
        self._stack: list[tuple[bool, bool]] = []  # (this block read, enclosing read)

    @property
    def reading(self) -> bool:
        return not self._stack or self._stack[-1][0]

    def directive(self, directive: str, argument: str) -> bool:
        """Follow one line; True when it was a conditional directive (it is then
        consumed). Raises ValueError for a malformed one (the block is skipped)."""
        if directive == "ifplugin":
            name = argument.strip()
            self._open(_RENAMED.get(name, name) in LOADED_PLUGINS)
        elif directive == "if":
            try:
                truth = evaluate(argument)
            except ValueError:
                self._open(False)
                raise
            self._open(truth)
        elif directive == "else":
            if not self._stack:
                raise ValueError("'else' without 'if'")
            read, enclosing = self._stack[-1]
            self._stack[-1] = (enclosing and not read, enclosing)
        elif directive == "endif":
            if not self._stack:
                raise ValueError("'endif' without 'if'")
            self._stack.pop()
        else:
            return False
        return True

    def _open(self, truth: bool) -> None:
        enclosing = self.reading
        self._stack.append((enclosing and truth, enclosing))

    def unclosed(self) -> int:
        return len(self._stack)

"""The rules loaded from rule files (aliasd/scanner/rulefile.py) as scanner symbols:
aliasd's own rule files always, SpamAssassin's published rules where installed
(``scanner_spamassassin``), extra files or directories from ``scanner_rules``. Loaded
once per process per combination, with a startup report of what was loaded and what
was skipped."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path

from aliasd.scanner.message import ParsedMessage, decode_header_value
from aliasd.scanner.relays import Relay
from aliasd.scanner.result import ScanRequest, Symbol
from aliasd.scanner.rulefile import BODY_NOSUBJECT, HeaderView, RuleSet
from aliasd.scanner.sa_evals import Facts
from aliasd.scanner.sa_header_evals import MAILTO_HREF

log = logging.getLogger(__name__)

BUILTIN = Path(__file__).resolve().parent.parent / "data" / "rules"
BODY_SCAN = 50_000  # characters of text the body rules read (SpamAssassin: body_part_scan_size)
RAW_SCAN = 200_000  # characters of raw body and message the rawbody/full rules read
MAX_URIS = 200
# SpamAssassin's link list also holds a mailto: link for each mailto: href and each
# address written in the text, and its uri rules read them (__UNSUB_LINK finds
# "mailto:list-unsubscribe@…", so KHOP_UNSUB_EMAIL does not fire on list mail).
MAX_MAILTO = 40
_LOCAL_PART = re.compile(r"[A-Za-z0-9._%+-]{1,64}\Z")
_DOMAIN_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}(?:\.[A-Za-z0-9-]{1,63}){1,8}")
# Rules from other files than aliasd's own count at this fraction of their score:
# SpamAssassin's scores were fitted for its threshold of 5 alongside its network tests
# and its own Bayes; here they add to rules and a Bayes of our own, against a
# threshold of 6. Chosen with SpamAssassin's rules on validation (--cv and the
# validation halves of --time and --logo): 1.0 caught 10 more of 560 new spam than 0.75
# but flagged 2 more of 3,310 ham; 0.75 one more ham than none at all.
EXTRA_WEIGHT = 0.75
# SpamAssassin's body, rawbody, uri and full rules alone (scanner_spamassassin =
# "content", without its header rules) count their full score: on the validation halves
# weights of 0.5 to 1.5 flagged the same ham (1 of 1,550 easy ham left out, 0 of 582
# newer easy ham, 10 of 3,310 in cross-validation) while catching more new spam
# (leave-spam-2-out 397, 401, 404, 410, 411 of 560 at 0.5, 0.75, 1.0, 1.25, 1.5); 2.0
# flagged 3 more ham. 1.0, SpamAssassin's own scale, keeps a margin from there.


# SpamAssassin's header rules (and the metas reading them) in mode "scored" (opt-in):
# those its files give a score count this share of it; those it ships without one (their
# scores come with sa-update; SpamAssassin would count them 1.0) do not count. Chosen on
# validation (--cv and the validation halves of --time and --logo, rescored from --dump
# lines) as the largest weight flagging at most one more ham than none: at 0.4
# leave-spam-2-out caught 474 of 560 against 462 without header rules, time-shifted
# spam-2 529 against 526, the same easy and hard ham flagged there, one more of 3,310 ham
# in cross-validation (0.2: 468 and 528, no more ham; 0.5: 476 and 531, two more ham;
# 1.0: 484 and 535, one more hard ham time-shifted and three in cross-validation); the
# unscored ones counted too (weights 0.25 to 1.0) flagged 4 to 16 more ham.
HEADER_WEIGHT = 0.4

SPAMASSASSIN_MODES = ("off", "content", "scored", "all")

# aliasd's built-in rules that state the same fact as a rule of SpamAssassin's files:
# where that rule runs, the built-in one gives way, so that the fact counts once.
# SpamAssassin's NORMAL_HTTP_TO_IP (a link to a public IPv4 address) fired on the very
# same 249 of 4,852 messages as HTTP_TO_IP in cross-validation (it leaves out private
# addresses; none of those messages linked to one alone); counted twice, it flagged one
# more ham.
SAME_FACT = {"HTTP_TO_IP": "NORMAL_HTTP_TO_IP"}


def superseded(rules: RuleSet) -> frozenset[str]:
    """The built-in rules that give way to a loaded rule stating the same fact."""
    return frozenset(own for own, other in SAME_FACT.items()
                     if other in rules.rules and rules.score_of(other) != 0)


class _CacheDir:
    """Where compiled patterns are kept, handed through load()'s cache without being
    part of its key: it changes no result, and the process's first load decides it."""

    __slots__ = ("path",)

    def __init__(self, path: str | None) -> None:
        self.path = path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _CacheDir)

    def __hash__(self) -> int:
        return 0


def load(paths: tuple[str, ...] = (), spamassassin_dir: str = "",
         spamassassin: str = "off", cache_dir: str | None = None) -> tuple[RuleSet, frozenset[str]]:
    """The rule set, loaded once per process for each combination of the other
    arguments (see _load); ``cache_dir``: where the compiled pattern databases are kept
    for the next process."""
    return _load(paths, spamassassin_dir, spamassassin, _CacheDir(cache_dir))


@functools.cache
def _load(paths: tuple[str, ...], spamassassin_dir: str, spamassassin: str,
          cache_dir: _CacheDir) -> tuple[RuleSet, frozenset[str]]:
    """The rule set: aliasd's own files, SpamAssassin's directory (``content``: its
    body, rawbody, uri and full rules and the metas over them; ``scored``: its header
    rules too, those it scores at HEADER_WEIGHT of their score, the others not counted;
    ``all``: all its rules), then the extra ``paths``. Logs what was loaded and skipped.

    Also returns the rules that count the score the rule set gives them: aliasd's own
    and, in ``content`` and ``scored`` mode, SpamAssassin's; the others count
    EXTRA_WEIGHT of theirs."""
    if spamassassin_dir and any(_same_path(p, spamassassin_dir) for p in paths):
        # scanner_rules naming SpamAssassin's directory (how it was switched on before
        # scanner_spamassassin existed): all of its rules, read once
        paths = tuple(p for p in paths if not _same_path(p, spamassassin_dir))
        spamassassin = "all"
    rules = RuleSet()
    rules.add_paths([BUILTIN])
    full_weight = set(rules.rules)
    if spamassassin != "off" and spamassassin_dir:
        if Path(spamassassin_dir).is_dir():
            before = set(rules.rules)
            rules.add_paths([spamassassin_dir],
                            skip_kinds=frozenset({"header", "mimeheader"}) if spamassassin == "content" else frozenset())
            added = set(rules.rules) - before
            if spamassassin == "content":
                full_weight |= added
            elif spamassassin == "scored":
                for name in rules.header_derived(added):
                    rules.scores[name] = round(rules.scores[name] * HEADER_WEIGHT, 3) if name in rules.scores else 0.0
                full_weight |= added
        else:
            log.info("scanner rules: no SpamAssassin rules at %s (Debian: apt install spamassassin)",
                     spamassassin_dir)
    rules.add_paths(paths)
    rules.compile(cache_dir.path)
    full_weight &= set(rules.rules)  # what compile disabled (metas on skipped rules) is gone
    log.info("scanner rules: %s", rules.report.summary())
    if rules.report.skipped_evals():
        log.info("scanner rules: eval: tests not implemented (rules): %s", rules.report.skipped_evals())
    for warning in rules.report.warnings[:50]:
        log.warning("rule file: %s", warning)
    return rules, frozenset(full_weight)


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def texts(pm: ParsedMessage) -> dict[str, str | bytes]:
    """What each kind of rule reads, as SpamAssassin defines it: body is the subject and
    the decoded text, paragraphs on lines of their own (body_nosubject the same without
    the subject); rawbody the decoded parts with their markup; uri one link a line; full
    the raw message."""
    text = pm.text[:BODY_SCAN]
    paragraphs = (" ".join(p.split()) for p in text.split("\n\n"))
    text_only = "\n".join(p for p in paragraphs if p)
    body = (pm.subject or "") + "\n" + text_only
    uris = "\n".join([
        *(f"http://{h}{p}" for h, p in zip(pm.url_hosts[:MAX_URIS], pm.url_paths[:MAX_URIS], strict=False)),
        *mailto_uris(pm.html_raw[:RAW_SCAN], text)])
    return {
        "body": body,
        BODY_NOSUBJECT: text_only,  # rules with tflags nosubject
        "rawbody": (pm.text_plain[:RAW_SCAN] + "\n" + pm.html_raw[:RAW_SCAN]),
        "uri": uris,
        "full": pm.raw[:RAW_SCAN],  # bytes: as SpamAssassin reads it, and no copy to re-encode
    }


def mailto_uris(markup: str, text: str) -> list[str]:
    """mailto: links as SpamAssassin lists them: each mailto: href, then each address
    in the text (found from its "@", read at most 64 characters back), at most MAX_MAILTO."""
    found: dict[str, None] = {}
    if "ailto:" in markup or "AILTO:" in markup:
        for m in MAILTO_HREF.finditer(markup):
            found["mailto:" + m.group(1).lower()] = None
            if len(found) >= MAX_MAILTO:
                return list(found)
    at = text.find("@")
    while at >= 0 and len(found) < MAX_MAILTO:
        local = _LOCAL_PART.search(text, max(0, at - 64), at)
        domain = _DOMAIN_PART.match(text, at + 1)
        if local and domain:
            found[f"mailto:{local.group(0)}@{domain.group(0)}".lower()] = None
        at = text.find("@", at + 1)
    return list(found)


def file_rule_symbols(
    rules: RuleSet, full_weight: frozenset[str], pm: ParsedMessage, request: ScanRequest, skip: set[str],
    relays: Callable[[], list[Relay]] | None = None,
    relay_counts: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0),
) -> list[Symbol]:
    """Symbols of the rules that hit, those named in ``skip`` (aliasd's built-in rules
    of the same name own them) left out, sub-rules (``__``) and zero scores too.
    ``relays`` gives the relay chain and ``relay_counts`` its counts (read only when a
    rule reads them)."""
    headers = HeaderView(pm.msg, decode_header_value, request.envelope_from, relays)
    hits = rules.match(texts(pm), headers, Facts(pm), relay_counts)
    out: list[Symbol] = []
    for name in hits:
        if name.startswith("__") or name in skip:
            continue
        score = rules.score_of(name)
        if name not in full_weight:
            score = round(score * EXTRA_WEIGHT, 3)
        if score:
            out.append(Symbol(name, score, (), rules.descriptions.get(name, "")))
    return out


load.cache_clear = _load.cache_clear  # type: ignore[attr-defined]

"""The catch-all regex gate: which local parts a ``create`` domain turns into aliases.

The text matched is whatever an outside sender puts before the @, so the gate runs on
RE2, whose time is linear in the text: with Python's backtracking engine a gate such as
``(a+)+$`` or ``([a-z0-9]+\\.?)+`` takes seconds for 30 characters and doubles with each
one more, holding up the lookup server Postfix waits on. New gates must compile on RE2
(no back-references or look-arounds); a gate stored before that rule that RE2 cannot
compile keeps working on Python's engine, with a warning in the log."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import re2

log = logging.getLogger(__name__)

MAX_GATE_REGEX = 500  # the column's width

Gate = Callable[[str], bool]


class GateError(ValueError):
    """A regex that cannot be a gate; the message says why, for people."""


def _options() -> re2.Options:
    opts = re2.Options()
    opts.log_errors = False  # a refused pattern is reported to the admin, not to stderr
    return opts


def check(regex: str) -> None:
    """Raise GateError unless ``regex`` can be a gate."""
    if len(regex) > MAX_GATE_REGEX:
        raise GateError(f"the catch-all regex is longer than {MAX_GATE_REGEX} characters")
    if any(ord(c) < 32 for c in regex):
        raise GateError("the catch-all regex must not contain control characters")
    try:
        re.compile(regex)
    except re.error as exc:
        raise GateError(f"catch-all regex {regex!r} is invalid: {exc}") from exc
    try:
        re2.compile(regex, _options())
    except re2.error as exc:
        raise GateError(
            f"catch-all regex {regex!r} uses what a linear-time matcher cannot run "
            f"(back-references, look-arounds): {_reason(exc)}"
        ) from exc


def _reason(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)


def compile_gate(regex: str) -> Gate:
    """``gate(local)`` is True when the whole local part matches. A regex that does not
    compile at all matches nothing: a broken gate must not open the domain."""
    try:
        return re2.compile(regex, _options()).fullmatch  # type: ignore[no-any-return]
    except re2.error:
        pass
    try:
        legacy = re.compile(regex)
    except re.error:
        log.warning("catch-all regex %r does not compile: no new aliases on its domain", regex)
        return lambda _local: False
    log.warning("catch-all regex %r needs Python's backtracking engine; set one RE2 can run", regex)
    return legacy.fullmatch  # type: ignore[return-value]


def admits(regex: str | None, local: str) -> bool:
    """The gate's verdict for one local part; no gate admits everything."""
    return not regex or bool(_cached(regex)(local))


_compiled: dict[str, Gate] = {}


def _cached(regex: str) -> Gate:
    gate = _compiled.get(regex)
    if gate is None:
        if len(_compiled) > 256:  # gates are few; a bound keeps edits from piling up
            _compiled.clear()
        gate = _compiled[regex] = compile_gate(regex)
    return gate

"""The scanner's result model, shared by the bundled scanner, the rspamd backend, the
milter and the CLI. rspamd's model: symbols with scores add up to a score; the action
follows from thresholds."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field


class Action(enum.StrEnum):
    NO_ACTION = "no action"
    GREYLIST = "greylist"
    ADD_HEADER = "add header"
    REWRITE_SUBJECT = "rewrite subject"
    SOFT_REJECT = "soft reject"
    REJECT = "reject"


@dataclass(frozen=True)
class Symbol:
    name: str
    score: float
    options: tuple[str, ...] = ()
    description: str = ""


@dataclass
class ScanRequest:
    """One message as the milter (or `aliasd scan`) hands it to a scanner."""

    message: bytes  # the raw RFC 822 message (headers + body), possibly truncated
    envelope_from: str = ""  # "" for the null sender <>
    recipients: list[str] = field(default_factory=list)  # original RCPT TO addresses
    client_addr: str | None = None
    # the MTA's name for the client (Postfix: its verified reverse-DNS name, or
    # "unknown"); None when the caller does not know it
    client_name: str | None = None
    helo: str | None = None
    queue_id: str | None = None
    alias_site: str | None = None  # the site of the (first) alias, for ALIAS_SITE_MISMATCH
    truncated: bool = False  # the message was larger than max_scan_size
    owner_id: int | None = None  # the aliases' owner when one user gets it (per-user Bayes)
    # The envelope's SPF as R_SPF_* (given a timeout), when the caller evaluates it once
    # for the mail-auth checks too (aliasd.scanner.spf.SharedSpf); None: the scanner
    # checks SPF itself (when spf_enabled).
    spf: Callable[[float], Symbol | None] | None = field(default=None, repr=False,
                                                         compare=False)


@dataclass
class ScanResult:
    score: float
    required_score: float  # the reject threshold, shown as "[score / required]"
    action: Action
    symbols: list[Symbol] = field(default_factory=list)
    is_skipped: bool = False  # scanner failed or timed out: message passes unscanned
    message_id: str | None = None

    @property
    def is_spam(self) -> bool:
        return self.action in (
            Action.ADD_HEADER,
            Action.REWRITE_SUBJECT,
            Action.SOFT_REJECT,
            Action.REJECT,
        )

    def symbol_names(self) -> list[str]:
        return [s.name for s in self.symbols]

    def spamd_result_header(self) -> str:
        """``X-Spamd-Result`` value in rspamd's format:
        ``default: False [3.40 / 15.00]; SYMBOL(score)[options]; …``"""
        flag = "True" if self.action == Action.REJECT else "False"
        parts = [f"default: {flag} [{self.score:.2f} / {self.required_score:.2f}]"]
        for sym in sorted(self.symbols, key=lambda s: (-abs(s.score), s.name)):
            opts = "[" + ",".join(sym.options) + "]" if sym.options else "[]"
            parts.append(f"{sym.name}({sym.score:.2f}){opts}")
        return "; ".join(parts)

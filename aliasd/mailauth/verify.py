"""The authentication of one incoming message: SPF of the envelope sender (pyspf, the
scanner's own check), each DKIM signature (dkimpy), the ARC chain it already carries
(dkimpy), and DMARC from those. All DNS goes through the configured resolver; a lookup
that times out gives ``temperror`` for that method and nothing else: our checks never
refuse or delay mail.

The outcome is an RFC 8601 ``Authentication-Results`` header (built with ``authres``,
the module dkimpy's ARC signer parses it with) and a short summary kept with the event."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import authres
import authres.arc
import authres.dmarc
import dkim

from aliasd.config import Settings
from aliasd.core.addresses import domain_of, header_addresses
from aliasd.mailauth import fastdkim, fastrsa  # noqa: F401 - faster dkimpy helpers
from aliasd.mailauth.dmarc import DmarcResult, evaluate
from aliasd.mailauth.dns import DkimDns, spf_lookup
from aliasd.scanner.result import Symbol
from aliasd.scanner.spf import check_spf

log = logging.getLogger(__name__)

# A message may carry any number of signatures; past this many the rest are not
# checked (each costs a DNS lookup and an RSA operation).
MAX_SIGNATURES = 5
# RFC 8617 allows 50 ARC sets; each one checked hashes the whole body again. Real chains
# are a few hops long; a longer one is reported failed without the work.
MAX_ARC_SETS = 10
# Signatures are checked on bodies up to this size. The work is linear and mostly in C
# (about 5 ms of GIL per 2 MB, see bench/mail_auth_cost.py); the milter hands over at
# most max_scan_size (2 MB by default), so this only bounds a raised max_scan_size.
MAX_CHECKED_MESSAGE = 8 * 1024 * 1024
_SPF_FROM_SYMBOL = {
    "R_SPF_ALLOW": "pass", "R_SPF_FAIL": "fail", "R_SPF_SOFTFAIL": "softfail",
    "R_SPF_NEUTRAL": "neutral", "R_SPF_NA": "none", "R_SPF_DNSFAIL": "temperror",
    "R_SPF_PERMFAIL": "permerror",
}  # fmt: skip


class _QuietLogger(logging.LoggerAdapter):
    """dkimpy logs every bad signature at ERROR; hostile mail is not our error."""

    def error(self, msg, *args, **kwargs):
        self.debug(msg, *args, **kwargs)


_dkim_log = _QuietLogger(logging.getLogger("aliasd.mailauth.dkimpy"), {})


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass | fail | neutral | temperror | permerror
    domain: str | None = None  # d=
    selector: str | None = None  # s=
    algorithm: str | None = None  # a=
    reason: str = ""


@dataclass
class AuthResults:
    spf: str = "none"
    spf_mailfrom: str | None = None  # the identity SPF checked (address or helo name)
    spf_domain: str | None = None
    dkim: list[DkimResult] = field(default_factory=list)
    arc: str = "none"  # none | pass | fail: the chain as it arrived
    arc_reason: str = ""
    arc_temperror: bool = False  # the chain could not be checked (DNS): do not seal
    dmarc: DmarcResult = field(default_factory=lambda: DmarcResult("none", None))
    checked: bool = True  # False: the message was too large to check
    # the body as checked (CRLF line ends): the seal hashes the same bytes, so the
    # canonical form computed here is reused there
    body: bytes | None = field(default=None, repr=False, compare=False)
    # aliasd's own DKIM signature on the forwarded message: the d= domain, "none (why)",
    # or "" when none was wanted (no one-click headers, or switched off)
    signed: str = ""

    @property
    def dkim_summary(self) -> str:
        """``pass`` when any signature passed, else the first result, else ``none``."""
        if any(d.result == "pass" for d in self.dkim):
            return "pass"
        return self.dkim[0].result if self.dkim else "none"

    def summary(self) -> dict:
        """What is kept with the event."""
        return {"spf": self.spf, "dkim": self.dkim_summary,
                "dkim_domains": [d.domain for d in self.dkim if d.result == "pass"],
                "dmarc": self.dmarc.result, "dmarc_policy": self.dmarc.policy,
                "from_domain": self.dmarc.from_domain, "arc": self.arc}  # fmt: skip

    def event_text(self) -> str:
        """One short line kept with the event: ``spf=pass dkim=fail dmarc=fail
        (p=reject) arc=none``, then ``signed=example.net`` (or ``signed=none (why)``)
        when aliasd signed the forwarded message (or could not)."""
        dmarc = self.dmarc.result + (f" (p={self.dmarc.policy})" if self.dmarc.policy else "")
        dkim_text = self.dkim_summary if self.checked else "none (not checked: too large)"
        text = f"spf={self.spf} dkim={dkim_text} dmarc={dmarc} arc={self.arc}"
        if self.signed:
            text += f" signed={self.signed}"
        return text[:200]

    def header(self, authserv_id: str) -> authres.AuthenticationResultsHeader:
        results: list = []
        if not self.checked:
            results.append(authres.DKIMAuthenticationResult(
                result="none", reason="message too large to check"))  # fmt: skip
        for d in self.dkim or ([DkimResult("none")] if self.checked else []):
            results.append(authres.DKIMAuthenticationResult(
                result=d.result, reason=_reason(d.reason), header_d=d.domain,
                header_s=d.selector, header_a=d.algorithm))  # fmt: skip
        mailfrom = _identity(self.spf_mailfrom)
        spf_kwargs = {"smtp_mailfrom": mailfrom} if mailfrom else {}
        results.append(authres.SPFAuthenticationResult(result=self.spf, **spf_kwargs))
        dm = self.dmarc
        results.append(authres.dmarc.DMARCAuthenticationResult(
            result=dm.result, reason=_reason(dm.reason), header_from=_identity(dm.from_domain),
            policy=dm.policy))  # fmt: skip
        results.append(authres.arc.ARCAuthenticationResult(result=self.arc))
        return authres.core.AuthenticationResultsHeader(
            authres.all_features(), authserv_id=authserv_id, results=results
        )

    def header_value(self, authserv_id: str) -> str:
        header = self.header(authserv_id)
        value = header.header_value()
        fastdkim.remember_results(value, header)  # the seal reads it back
        return value


def _reason(text: str | None) -> str | None:
    """A reason= value authres quotes correctly and reads back the same: its parser
    takes parentheses in a quoted string for comments, doubles escaped quotes and
    leaves a value with "@" bare, so only plain characters are kept."""
    if not text:
        return None
    text = _REASON_UNSAFE.sub(" ", text.replace("@", " at "))
    return " ".join(text.split())[:80] or None


def _identity(value: str | None) -> str | None:
    """smtp.mailfrom= and header.from= only when authres writes them as a plain value
    that reads back the same (a dot-atom address or domain), else left out."""
    if value and _IDENTITY_OK.fullmatch(value):
        return value
    return None


_REASON_UNSAFE = re.compile(r"[^A-Za-z0-9 .,:_/=+-]")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOMAIN = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
_IDENTITY_OK = re.compile(rf"(?:{_ATOM}(?:\.{_ATOM})*@)?{_DOMAIN}")


def _safe(value: bytes | None, limit: int = 64) -> str | None:
    if not value:
        return None
    text = value.decode("ascii", "replace")
    text = "".join(c for c in text if c.isalnum() or c in ".-_")
    return text[:limit] or None


def _verifier(settings: Settings, message: bytes) -> dkim.DKIM:
    """The message parsed once, for every signature and the ARC chain."""
    return dkim.DKIM(message, logger=_dkim_log, timeout=int(settings.dns_timeout) or 1)


def check_dkim(settings: Settings, message: bytes | dkim.DKIM,
               memo: dict | None = None) -> list[DkimResult]:  # fmt: skip
    """One result per DKIM-Signature (the first MAX_SIGNATURES). ``memo``: key records
    already looked up for this message."""
    memo = {} if memo is None else memo
    try:
        verifier = message if isinstance(message, dkim.DKIM) else _verifier(settings, message)
    except Exception as exc:  # noqa: BLE001 - unparsable message: nothing verifies
        return [DkimResult("permerror", reason=f"message cannot be parsed: {exc}"[:100])]
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    results = []
    for idx in range(min(count, MAX_SIGNATURES)):
        dnsfunc = DkimDns(settings, memo)
        tags: dict = {}
        try:
            prep = verifier.verify_headerprep(idx)
            if prep:
                tags = prep[0]
                ok = verifier.verify_sig(prep[0], prep[1], prep[2][idx], dnsfunc)
            else:
                ok = False
        except dkim.DKIMException as exc:
            # an altered body is a signature that does not verify; the rest is malformed
            altered = "body hash mismatch" in str(exc)
            results.append(DkimResult("fail" if altered else "permerror", _safe(tags.get(b"d")),
                                      _safe(tags.get(b"s")), _safe(tags.get(b"a")),
                                      "body hash mismatch" if altered else str(exc)[:80]))  # fmt: skip
            continue
        except Exception as exc:  # noqa: BLE001 - a dkimpy fault on hostile input
            results.append(DkimResult("permerror", reason=f"unverifiable: {exc}"[:100]))
            continue
        d, s, a = _safe(tags.get(b"d")), _safe(tags.get(b"s")), _safe(tags.get(b"a"))
        if ok:
            results.append(DkimResult("pass", d, s, a))
        elif dnsfunc.temporary_failure:
            results.append(DkimResult("temperror", d, s, a, "key lookup timed out"))
        elif dnsfunc.missing:  # RFC 6376 6.1.2: no key record is a permanent error
            results.append(DkimResult("permerror", d, s, a, "no key for selector"))
        else:
            results.append(DkimResult("fail", d, s, a, "signature did not verify"))
    return results


def check_arc(settings: Settings, message: bytes | dkim.DKIM,
              memo: dict | None = None) -> tuple[str, str, bool]:  # fmt: skip
    """(cv, reason, temperror) of the ARC chain the message arrived with."""
    if isinstance(message, dkim.DKIM):
        headers, body = message.headers, message.body
    else:
        head = message[: message.find(b"\r\n\r\n") + 1 or len(message)].lower()
        if b"arc-seal" not in head:
            return "none", "", False
        try:
            headers, body = fastdkim.parse_message(message)
        except Exception as exc:  # noqa: BLE001 - any malformed chain is a failed chain
            return "fail", f"unverifiable chain: {exc}"[:100], False
    seals = sum(1 for name, _ in headers if name.lower() == b"arc-seal")
    if seals == 0:
        return "none", "", False
    if seals > MAX_ARC_SETS:
        return "fail", f"more than {MAX_ARC_SETS} ARC sets: not checked", False
    dnsfunc = DkimDns(settings, memo)
    # dkimpy's arc_verify, on the headers and body parsed already
    arc = dkim.ARC(None, logger=_dkim_log, timeout=int(settings.dns_timeout) or 1)
    arc.headers, arc.body = list(headers), body
    try:
        cv, _results, reason = arc.verify(dnsfunc=dnsfunc)
    except dkim.DKIMException as exc:
        cv, reason = dkim.CV_Fail, str(exc)
    except Exception as exc:  # noqa: BLE001 - any malformed chain is a failed chain
        return "fail", f"unverifiable chain: {exc}"[:100], dnsfunc.temporary_failure is not None
    cv_text = cv.decode() if isinstance(cv, bytes) else str(cv)
    reason_text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    return cv_text, reason_text[:100], dnsfunc.temporary_failure is not None


def single_from_domain(from_header: bytes | None) -> str | None:
    """The domain of the one From: address (DMARC needs exactly one)."""
    if from_header is None:
        return None
    addresses = [a for _n, a in header_addresses(from_header.decode("utf-8", "replace")) if a]
    return domain_of(addresses[0]) if len(addresses) == 1 else None


def authenticate(settings: Settings, *, message: bytes, sender: str, client_addr: str | None,
                 helo: str | None, from_header: bytes | None, complete: bool = True,
                 spf: Callable[[float], Symbol | None] | None = None) -> AuthResults:  # fmt: skip
    """All checks of one message. ``complete`` False: the body was cut at the scan cap,
    so signatures cannot be checked (SPF and the DMARC policy lookup still are); the same
    past MAX_CHECKED_MESSAGE bytes. ``spf``: the message's SPF evaluation shared with the
    scanner (:class:`aliasd.scanner.spf.SharedSpf` over the same envelope and resolver),
    asked with ``dns_timeout``; without it SPF is checked here."""
    res = AuthResults(checked=complete and len(message) <= MAX_CHECKED_MESSAGE)
    if spf is not None:
        spf_sym = spf(settings.dns_timeout)
    else:
        spf_sym = check_spf(client_addr, sender, helo, lookup=spf_lookup(settings),
                            timeout=settings.dns_timeout)  # fmt: skip
    if spf_sym is not None:
        res.spf = _SPF_FROM_SYMBOL.get(spf_sym.name, "permerror")
    res.spf_mailfrom = sender if "@" in sender else (helo or None)
    res.spf_domain = domain_of(sender) if "@" in sender else (helo or None)
    if res.checked:
        try:
            verifier = _verifier(settings, message)
        except Exception as exc:  # noqa: BLE001 - unparsable message: nothing verifies
            res.dkim = [DkimResult("permerror", reason=f"message cannot be parsed: {exc}"[:100])]
            res.arc, res.arc_reason, res.arc_temperror = check_arc(settings, message)
        else:
            res.body = verifier.body
            memo: dict = {}
            res.dkim = check_dkim(settings, verifier, memo)
            res.arc, res.arc_reason, res.arc_temperror = check_arc(settings, verifier, memo)
    passes = [d.domain for d in res.dkim if d.result == "pass" and d.domain]
    res.dmarc = evaluate(settings, single_from_domain(from_header), res.spf,
                         res.spf_domain, passes)  # fmt: skip
    return res

"""The mail path's authenticate, sign and seal steps for the milter: the checks of
:mod:`aliasd.mailauth.verify` run beside the scan (their DNS time overlaps the scan's
work), and once the verdict stands the message gets our Authentication-Results and, when
forwarded to an alias, an ARC set sealed with the alias domain's key. Forwarded mail
carrying our one-click headers is first DKIM-signed with the same domain's keys, over
the headers as they leave, so that the ARC-Message-Signature covers that signature too
(RFC 8617 4.1.2 asks the AMS to cover the DKIM-Signatures present).

Never a refusal or a delay because of these checks: a fault or a timeout here leaves
the message as it is, without the headers."""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import TYPE_CHECKING

from aliasd.config import Settings
from aliasd.core.addresses import domain_of
from aliasd.mailauth import fastdkim, signing
from aliasd.mailauth import seal as arc_seal
from aliasd.mailauth.dns import spf_lookup
from aliasd.mailauth.verify import AuthResults, authenticate
from aliasd.milter.oneclick_headers import one_click_added
from aliasd.milter.replies import Transform
from aliasd.scanner.spf import SharedSpf

if TYPE_CHECKING:
    from aliasd.core.events import AliasTarget
    from aliasd.milter.processing import Envelope, Verdict

log = logging.getLogger(__name__)

HEADER_AR = "Authentication-Results"
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(16, thread_name_prefix="mailauth")
        return _pool


def shared_spf(settings: Settings, envelope: Envelope) -> SharedSpf | None:
    """The message's one SPF evaluation, for the checks and the scanner both, when both
    want it (``mail_auth_enabled`` and ``spf_enabled``); None otherwise: whoever checks
    SPF alone checks it as before."""
    if not (settings.mail_auth_enabled and settings.spf_enabled):
        return None
    return SharedSpf(envelope.client_addr, envelope.sender, envelope.helo,
                     lookup=spf_lookup(settings))  # fmt: skip


def start(settings: Settings, envelope: Envelope, raw: bytes | None = None,
          spf: SharedSpf | None = None) -> concurrent.futures.Future | None:  # fmt: skip
    """Begin the checks of one message in the background (None when switched off);
    ``raw``: the message as :meth:`Envelope.raw_message` gives it, when made already;
    ``spf``: the evaluation shared with the scanner (:func:`shared_spf`)."""
    if not settings.mail_auth_enabled:
        return None
    return _executor().submit(
        authenticate, settings, message=raw if raw is not None else envelope.raw_message(),
        sender=envelope.sender,
        client_addr=envelope.client_addr, helo=envelope.helo,
        from_header=envelope.first_header("From"), complete=not envelope.truncated, spf=spf,
    )  # fmt: skip


def _result(future: concurrent.futures.Future | None, settings: Settings) -> AuthResults | None:
    if future is None:
        return None
    # every lookup is bounded by dns_timeout; a few run one after the other
    try:
        return future.result(timeout=settings.dns_timeout * 4 + 2)
    except concurrent.futures.TimeoutError:
        log.warning("mail authentication checks overran; message passes without them")
    except Exception:  # noqa: BLE001
        log.exception("mail authentication checks failed; message passes without them")
    return None


def _claims_our_id(value: bytes, authserv_id: str) -> bool:
    head = value.decode("ascii", "replace").split(";", 1)[0]
    head = head.split("(", 1)[0].split()  # authserv-id, then maybe a version and comments
    return bool(head) and head[0].lower() == authserv_id.lower()


def forged_results(envelope: Envelope, authserv_id: str) -> list[tuple[str, int]]:
    """Authentication-Results that arrived claiming to be ours (RFC 8601 5: remove them,
    or a sender could write "dkim=pass" in our name), as (name, occurrence) to delete."""
    out, seen = [], 0
    for name, value in envelope.headers:
        if name.lower() == HEADER_AR.lower():
            seen += 1
            if _claims_our_id(value, authserv_id):
                out.append((name, seen))
    return out


def _outgoing_head(envelope: Envelope, verdict: Verdict) -> bytes:
    """The header block as Postfix will pass it on (our header edits applied), each
    field ending in CRLF; the body is not copied."""
    removed = {(n.lower(), i) for n, i in verdict.remove_headers}
    headers, seen = [], 0
    for name, value in envelope.headers:
        if name.lower() == HEADER_AR.lower():
            seen += 1
            if (name.lower(), seen) in removed:
                continue
        headers.append((name, value))
    if verdict.new_subject is not None:
        replaced = False
        for i, (name, _value) in enumerate(headers):
            if name.lower() == "subject":
                headers[i] = (name, verdict.new_subject.encode("utf-8", "replace"))
                replaced = True
                break
        if not replaced:
            headers.append(("Subject", verdict.new_subject.encode("utf-8", "replace")))
    headers += [(n, v.encode("utf-8", "replace")) for n, v in verdict.add_headers]
    from aliasd.milter.processing import Envelope as _Envelope

    return _Envelope(headers=headers, body=bytearray()).raw_message()[:-2]


def _body(envelope: Envelope, results: AuthResults | None) -> bytes | None:
    """The whole body with CRLF line ends, as verification parsed it when it did (its
    canonical forms are then shared); None when the milter did not keep all of it."""
    if results is not None and results.body is not None:
        return results.body
    if envelope.truncated or (results is not None and not results.checked):
        return None
    return fastdkim.normalise_line_ends(bytes(envelope.body))


def _sign(settings: Settings, envelope: Envelope, verdict: Verdict, domain: str | None,
          results: AuthResults | None, head: bytes) -> list[tuple[str, str]]:  # fmt: skip
    """aliasd's DKIM-Signature(s) for a forwarded message with our one-click headers, put
    at the top of the header block; [] when not wanted or not possible (the reason is
    logged and kept with the event's authentication summary)."""
    if not (settings.forward_dkim_sign and domain and one_click_added(verdict.add_headers)):
        return []
    fields: list[tuple[str, str]] = []
    try:
        fields = signing.forward_signature(settings, domain, head, _body(envelope, results))
    except signing.Unsigned as exc:
        note = f"none ({exc})"
        log.info("queue id %s forwarded unsigned: %s", envelope.queue_id, exc)
    except Exception as exc:  # noqa: BLE001 - never a refusal because of our signature
        note = f"none (signing failed: {type(exc).__name__})"
        log.exception("DKIM signing of forwarded mail failed; message passes unsigned")
    else:
        note = domain
        if verdict.transform is None:
            verdict.transform = Transform()
        # inserted at the top one after the other: reversed, the first one ends up first
        verdict.transform.insert_headers.extend(reversed(fields))
    if results is not None:
        results.signed = note
    return fields


def finish(settings: Settings, future: concurrent.futures.Future | None, envelope: Envelope,
           verdict: Verdict, targets: list[AliasTarget]) -> AuthResults | None:  # fmt: skip
    """DKIM-sign (one-click headers) and add Authentication-Results (and the ARC set) to
    an accepted message; returns the results for the event (None when the checks did not
    run)."""
    results = _result(future, settings)
    if verdict.status != "accept":
        return results
    alias_domain = domain_of(targets[0].address) if targets else None
    authserv_id = settings.effective_authserv_id
    if results is not None:
        verdict.remove_headers.extend(forged_results(envelope, authserv_id))
    head = _outgoing_head(envelope, verdict)  # as it leaves: what is signed and sealed
    signed = _sign(settings, envelope, verdict, alias_domain, results, head)
    if results is None:
        return results
    try:
        ar_value = results.header_value(authserv_id)
    except Exception:  # noqa: BLE001
        log.exception("could not write Authentication-Results")
        return results
    if (settings.arc_enabled and alias_domain and results.checked
            and not results.arc_temperror):  # fmt: skip
        # the body verification parsed (CRLF line ends): its canonical form is reused
        body = results.body if results.body is not None else \
            fastdkim.normalise_line_ends(bytes(envelope.body))
        # our signature sits above the rest, as apply_transform inserts it
        head = b"".join(f"{n}: {v}\n".replace("\n", "\r\n").encode("ascii", "replace")
                        for n, v in signed) + head  # fmt: skip
        try:
            arc_set = arc_seal.seal_parts(settings, alias_domain, head, body, ar_value)
        except Exception:  # noqa: BLE001
            log.exception("ARC sealing failed; message passes unsealed")
            arc_set = []
    else:
        arc_set = []
    # Trace fields go on top, newest first (RFC 8601 section 5, RFC 8617 section 4.1):
    # ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results, Authentication-Results,
    # then our DKIM-Signature. Each insert lands at the top, so the last one ends up first.
    if verdict.transform is None:
        verdict.transform = Transform()
    verdict.transform.insert_headers.extend([(HEADER_AR, ar_value), *reversed(arc_set)])
    return results


def event_facts(results: AuthResults | None) -> dict:
    """The MessageFacts fields that come from the checks."""
    if results is None:
        return {}
    summary = results.summary()
    return {"dkim_checked": results.checked,
            "dkim_pass_domains": tuple(summary["dkim_domains"]),
            "auth": results.event_text()}  # fmt: skip

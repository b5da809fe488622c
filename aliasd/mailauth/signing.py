"""DKIM signing with a managed domain's keys (:mod:`aliasd.mailauth.keys`, the keys
``aliasd dns`` publishes): the one place aliasd makes a DKIM-Signature, for replies sent
as an alias and for forwarded mail that carries aliasd's one-click headers.

Forwarded mail: RFC 8058 section 4 (and Gmail) offer one-click unsubscribe only when a
valid DKIM signature covers ``List-Unsubscribe`` and ``List-Unsubscribe-Post``. aliasd
adds those after the sender signed, so it signs them itself with the alias domain's key
(RSA, and ed25519 as a second signature when the domain has one), relaxed/relaxed, over
the header block as it leaves and the body that verification already parsed (its
canonical form is shared with the ARC seal through :mod:`aliasd.mailauth.fastdkim`).
Headers only: the sender's own signature keeps verifying.

Signing is best effort: a message too large, a missing key or headers dkimpy refuses
give :class:`Unsigned` with the reason, and the message passes as it is."""

from __future__ import annotations

import re
from collections.abc import Sequence

import dkim

from aliasd.config import Settings
from aliasd.mailauth import (
    fastdkim,  # noqa: F401 - C-speed parsing and canonicalisation for dkimpy
    fastrsa,  # noqa: F401 - OpenSSL signing for dkimpy
    keys,
)

RELAXED_RELAXED = (b"relaxed", b"relaxed")
RELAXED_SIMPLE = (b"relaxed", b"simple")  # dkimpy's default; what replies have used
# Bodies are signed up to the size signatures are verified up to (verify.py).
MAX_SIGNED_MESSAGE = 8 * 1024 * 1024

# What aliasd's signature on forwarded mail covers, when present: the originator's
# fields as they leave (Subject after a rewrite, Reply-To with the reverse alias) and
# the one-click pair, never fields a later hop adds or changes (Received, our X- ones).
FORWARD_HEADERS = (
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding", "list-id",
    "list-unsubscribe", "list-unsubscribe-post",
)  # fmt: skip
# Listed once more than present (RFC 6376 8.15 "oversigning"): a List-Unsubscribe added
# further down the line breaks the signature instead of borrowing it.
OVERSIGNED = ("list-unsubscribe", "list-unsubscribe-post")


class Unsigned(Exception):
    """The message cannot be signed; ``str(exc)`` says why, for the log and the event."""


def header_names(head: bytes) -> list[bytes]:
    """The field names of a header block, lower-case, in order (continuations skipped)."""
    return [line.partition(b":")[0].rstrip().lower() for line in head.split(b"\n")
            if line.strip() and line[:1] not in (b" ", b"\t")]  # fmt: skip


def header_fields(lines: Sequence[bytes]) -> list[tuple[str, str]]:
    """dkimpy's "Name: value\\r\\n" lines as (name, value) with "\\n\\t" folding, the
    form a milter's add-header edit takes."""
    out = []
    for line in lines:
        text = line.decode("ascii", "replace")
        name, _, value = text.partition(":")
        value = re.sub(r"\r?\n", "\n", value.strip())
        out.append((name.strip(), value))
    return out


def sign_parts(settings: Settings, domain: str, head: bytes, body: bytes,
               include: Sequence[str | bytes], *,
               canonicalize: tuple[bytes, bytes] = RELAXED_RELAXED) -> list[bytes]:  # fmt: skip
    """One DKIM-Signature line (ending in CRLF) per signing key of ``domain``, RSA first,
    for the message given as its header block (fields ending in a line end) and its body
    with CRLF line ends; only the header block is parsed. Raises :class:`Unsigned`."""
    try:
        signing = keys.signing_keys(settings, domain)
    except (keys.DkimKeyError, OSError) as exc:
        raise Unsigned(f"no signing key for {domain}: {exc}") from exc
    if not signing:
        raise Unsigned(f"no signing key for {domain}")
    names = [h.encode().lower() if isinstance(h, str) else h.lower() for h in include]
    lines, errors = [], []
    for key in signing:
        try:
            signer = dkim.DKIM(head + b"\r\n", signature_algorithm=key.algorithm.encode())
            signer.body = body  # as parsed once already: not split and joined again
            lines.append(signer.sign(key.selector.encode(), key.domain.encode(),
                                     key.dkimpy_private_key(), canonicalize=canonicalize,
                                     include_headers=names))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - hostile headers: this key does not sign
            errors.append(f"{key.algorithm}: {exc}")
    if not lines:
        raise Unsigned("; ".join(errors)[:200] or "nothing signed")
    return lines


def sign_message(settings: Settings, domain: str, message: bytes,
                 include: Sequence[str | bytes], *,
                 canonicalize: tuple[bytes, bytes] = RELAXED_SIMPLE) -> list[bytes]:  # fmt: skip
    """:func:`sign_parts` of a whole message."""
    head, body = fastdkim.split_message(message)
    if body is None:
        head = head if head.endswith(b"\n") else head + b"\r\n"
    return sign_parts(settings, domain, head, body or b"", include, canonicalize=canonicalize)


def forward_signature(settings: Settings, domain: str, head: bytes,
                      body: bytes | None) -> list[tuple[str, str]]:  # fmt: skip
    """The DKIM-Signature fields (name, value) for a forwarded message as it leaves:
    ``head`` its header block, ``body`` its complete body with CRLF line ends (None when
    the milter did not see all of it). Raises :class:`Unsigned` with the reason."""
    if body is None or len(head) + len(body) > MAX_SIGNED_MESSAGE:
        raise Unsigned("message too large to sign")
    present = header_names(head)
    froms = present.count(b"from")
    if froms != 1:
        raise Unsigned("no From: header" if froms == 0 else "more than one From: header")
    names = set(present)
    include = [h for h in FORWARD_HEADERS if h.encode() in names]
    include += [h for h in OVERSIGNED if h.encode() in names]
    return header_fields(sign_parts(settings, domain, head, body, include))

"""ARC sealing (RFC 8617) of a forwarded message with dkimpy: our Authentication-Results
become the ARC-Authentication-Results, then ARC-Message-Signature and ARC-Seal are made
with the alias domain's RSA key. dkimpy picks ``i=`` (one past the highest instance on
the message) and takes ``cv=`` from the ``arc=`` result in our Authentication-Results;
a chain that failed is sealed ``cv=fail`` without the earlier sets, as RFC 8617 5.1.2
says. Headers only: nothing here touches the body."""

from __future__ import annotations

import logging

import dkim

from aliasd.config import Settings
from aliasd.mailauth import (
    fastdkim,
    fastrsa,  # noqa: F401 - OpenSSL signing for dkimpy
    keys,
)
from aliasd.mailauth.signing import header_fields, header_names

log = logging.getLogger(__name__)

# What the ARC-Message-Signature covers: the originator's headers, never ones that a
# later hop or aliasd itself adds or changes after sealing (Received, our X- headers).
AMS_HEADERS = (
    "from", "to", "cc", "subject", "date", "message-id", "reply-to", "in-reply-to",
    "references", "mime-version", "content-type", "content-transfer-encoding",
    "list-id", "list-unsubscribe", "list-unsubscribe-post",
)  # fmt: skip
# RFC 8617 4.1.2: the AMS SHOULD cover the DKIM-Signatures present (aliasd's own on
# forwarded mail included, which is why signing comes before sealing). Past this many a
# message is hostile and they are left out rather than making h= that long.
MAX_SEALED_SIGNATURES = 16


def seal(settings: Settings, domain: str, message: bytes, ar_value: str,
         timestamp: int | None = None) -> list[tuple[str, str]]:  # fmt: skip
    """The new ARC set (three header fields, in the order to add them), or [] when the
    message cannot be sealed (no RSA key, no From:, too many instances, bad input).

    ``message`` is the message as it will leave (without our Authentication-Results);
    ``ar_value`` is our Authentication-Results value, which carries ``arc=``."""
    head, body = fastdkim.split_message(message)
    return seal_parts(settings, domain, head, body or b"", ar_value, timestamp)


def seal_parts(settings: Settings, domain: str, head: bytes, body: bytes, ar_value: str,
               timestamp: int | None = None) -> list[tuple[str, str]]:  # fmt: skip
    """:func:`seal` of a message given as its header block (each field ending in a line
    end) and its body with CRLF line ends, as verification parsed it: only the header
    block is parsed here, and the body's canonical form computed then is reused."""
    try:
        key = next((k for k in keys.signing_keys(settings, domain) if k.algorithm == keys.RSA),
                   None)  # fmt: skip
    except (keys.DkimKeyError, OSError) as exc:
        log.warning("no ARC seal for %s: %s", domain, exc)
        return []
    if key is None:
        return []
    all_names = header_names(head)
    names = set(all_names)
    present = [h.encode() for h in AMS_HEADERS if h.encode() in names]
    if b"from" not in present:
        return []
    signatures = all_names.count(b"dkim-signature")
    if signatures <= MAX_SEALED_SIGNATURES:
        present += [b"dkim-signature"] * signatures  # each one, bottom up
    ar_line = b"Authentication-Results: " + ar_value.encode("ascii", "replace") + b"\r\n"
    srv_id = ar_value.split(";", 1)[0].strip().lower().encode()
    try:
        # dkim.arc_sign, with the body handed over instead of parsed again
        signer = dkim.ARC(ar_line + head + b"\r\n", signature_algorithm=b"rsa-sha256")
        signer.should_not_sign.discard(b"dkim-signature")  # dkimpy's DKIM default, not ARC's
        signer.body = body
        lines = signer.sign(key.selector.encode(), key.domain.encode(), key.private_key_pem,
                            srv_id, include_headers=present, timestamp=timestamp)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - hostile chains: the message goes unsealed
        log.info("no ARC seal for a message to %s: %s", domain, exc)
        return []
    return header_fields(lines)

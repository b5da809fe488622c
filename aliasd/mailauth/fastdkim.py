"""dkimpy's message-sized helpers replaced by equivalents that do the per-byte work in
C (``bytes`` methods) instead of regular expressions and Python loops, and work done
once per message instead of once per signature. Same results, byte for byte (tested
against dkimpy's own functions on hostile input); only the time changes:

- parsing: dkimpy splits the whole message into lines with a regular expression and
  joins the body again (17 ms for a 2 MB text body, 80 ms for a hostile one); here only
  the header block is split, and the body keeps its bytes when its line ends are CRLF
  already (as Postfix hands them to the milter).
- body canonicalisation: dkimpy's relaxed form makes one regular-expression match per
  run of whitespace (73 ms for 2 MB of text, 300 ms for ``"a " * 1_000_000``), all
  under the GIL, and its trailing-line strip loops in Python once per empty line.
- relaxed header canonicalisation: two regular-expression substitutions per header
  field per signature become a few ``bytes`` operations, and a field met again (the
  next signature over the same header block) is looked up.
- a canonical body is kept for the next signature of the same message: the DKIM
  signature (relaxed body), the ARC-Message-Signatures it arrived with and the one we
  seal all hash the same canonical body.
- a DKIM key record (its DER public key parsed in Python) is parsed once per text.
- the SHA-256 of a kept canonical body is computed once: aliasd's own DKIM signature
  on forwarded mail (RSA, maybe ed25519), the ARC seal and a relaxed-body signature the
  message arrived with all hash the same bytes (``bh=``).
- ARC sealing parses our own Authentication-Results back with ``authres`` (about 1 ms,
  more than the rest of the seal): the header object we built it from is handed back
  instead. Only for the exact text we made, and only when parsing that text gives the
  same results (``verify`` keeps reasons and identities free of what authres cannot
  read back).

Installed once, on import, like :mod:`aliasd.mailauth.fastrsa`."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator

import authres
import dkim
import dkim.canonicalization as canon
import dkim.crypto

_rfc822_parse = dkim.rfc822_parse
_evaluate_pk = dkim.evaluate_pk


def split_message(message: bytes) -> tuple[bytes, bytes | None]:
    """(header block up to and with the line end before the empty line, the body with
    CRLF line ends); body None when there is no empty line (all header)."""
    if message[:1] == b"\n" or message[:2] == b"\r\n":
        return b"", normalise_line_ends(message[1:] if message[:1] == b"\n" else message[2:])
    ends = [i for i in (message.find(b"\n\n"), message.find(b"\n\r\n")) if i >= 0]
    if not ends:
        return message, None
    end = min(ends)
    blank = 1 if message[end + 1 : end + 2] == b"\n" else 2
    return message[: end + 1], normalise_line_ends(message[end + 1 + blank :])


def parse_message(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's ``rfc822_parse``: (headers as [name, value] lists, CRLF body)."""
    head, body = split_message(message)
    if body is None:
        return _rfc822_parse(message)  # headers only: nothing big to split
    return (_rfc822_parse(head)[0] if head else []), body


def normalise_line_ends(data: bytes) -> bytes:
    """``\\r?\\n`` → ``\\r\\n`` (what dkimpy's split-and-join does to the body)."""
    if data.count(b"\n") == data.count(b"\r\n"):
        return data
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def strip_trailing_lines(content: bytes) -> bytes:
    """dkimpy's ``strip_trailing_lines``: trailing CRLFs cut to one (added if none)."""
    tail = content[len(content.rstrip(b"\r\n")) :]
    if tail.endswith(b"\r\n"):
        # the CR/LF tail alternates after its last doubled character
        start = max(tail.rfind(b"\r\r"), tail.rfind(b"\n\n")) + 1
        pairs = (len(tail) - start) // 2
    else:
        pairs = 0
    if pairs == 0:
        return content + b"\r\n"
    return content[: len(content) - 2 * (pairs - 1)]


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4, as dkimpy's ``Relaxed.canonicalize_body``: whitespace runs to one
    space, none at line ends, trailing empty lines dropped. Compressing first leaves at
    most one space before each CRLF, and each halving pass is one C scan."""
    if b"\t" in body:
        body = body.replace(b"\t", b" ")
    while b"  " in body:
        body = body.replace(b"  ", b" ")
    body = strip_trailing_lines(body.replace(b" \r\n", b"\r\n"))
    return b"" if body == b"\r\n" else body


def _compress_spaces(value: bytes) -> bytes:
    if b"\t" in value:
        value = value.replace(b"\t", b" ")
    while b"  " in value:
        value = value.replace(b"  ", b" ")
    return value


def _relaxed_field(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    return (name.lower().rstrip(),
            _compress_spaces(value.replace(b"\r\n", b"").replace(b"\n", b"")).strip()
            + b"\r\n")  # fmt: skip


# Canonical fields already made, by (name, value): one message's header block is
# canonicalised once per signature, and a forwarded message is verified, signed and
# sealed (two signatures), mostly over the same fields. Bounded; a race at worst
# computes a field twice.
_RELAXED_MEMO: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
RELAXED_MEMO_FIELDS = 4096


def relaxed_headers(headers):
    """dkimpy's ``Relaxed.canonicalize_headers``: names lower-cased, values unfolded
    (``\r?\n`` removed), whitespace runs to one space, stripped, CRLF-terminated."""
    memo = _RELAXED_MEMO
    out = []
    for name, value in headers:
        key = (name, value)
        field = memo.get(key)
        if field is None:
            field = _relaxed_field(name, value)
            if len(memo) >= RELAXED_MEMO_FIELDS:
                memo.clear()
            memo[key] = field
        out.append(field)
    return out


# Bodies smaller than this are canonicalised again rather than looked up: it costs less.
MEMO_MIN_BODY = 16 * 1024
MEMO_ENTRIES = 4  # a few messages in flight at once; each entry holds two bodies


class _BodyMemo:
    """(algorithm, body) → canonical body; keyed by content (a bytes hash is computed
    once per object), so a seal hits what verification computed from another parse.
    The canonical bodies handed out are known by identity, with their SHA-256 once
    computed."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[bytes, bytes], bytes] = OrderedDict()
        self._digests: dict[int, tuple[bytes, bytes | None]] = {}  # id → (body, sha256)
        self._lock = threading.Lock()

    def kept(self, data) -> bool:
        """Whether ``data`` is (this very object) a canonical body kept here."""
        if type(data) is not bytes or len(data) < MEMO_MIN_BODY:
            return False
        with self._lock:
            found = self._digests.get(id(data))
        return found is not None and found[0] is data

    def sha256(self, body: bytes) -> bytes:
        """The SHA-256 digest of a body :meth:`kept` said yes to, computed once."""
        with self._lock:
            found = self._digests.get(id(body))
        if found is not None and found[0] is body and found[1] is not None:
            return found[1]
        digest = hashlib.sha256(body).digest()
        with self._lock:
            found = self._digests.get(id(body))
            if found is not None and found[0] is body:
                self._digests[id(body)] = (body, digest)
        return digest

    def get(self, algorithm, body: bytes) -> bytes:
        if len(body) < MEMO_MIN_BODY:
            return _CANON[algorithm](body)
        key = (algorithm.name, body)
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
                return found
        result = _CANON[algorithm](body)
        with self._lock:
            self._entries[key] = result
            self._digests[id(result)] = (result, None)
            while len(self._entries) > MEMO_ENTRIES:
                _key, dropped = self._entries.popitem(last=False)
                if not any(v is dropped for v in self._entries.values()):
                    self._digests.pop(id(dropped), None)
        return result

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._digests.clear()


_CANON = {canon.Relaxed: relaxed_body, canon.Simple: strip_trailing_lines}
_memo = _BodyMemo()


class KeptBodySha256:
    """``hashlib.sha256`` as dkimpy uses it (update, digest, name), except that a kept
    canonical body hashed on its own takes its digest from the memo: computed once for
    every signature over it. Anything else is hashed as it comes."""

    name = "sha256"
    digest_size = 32
    block_size = 64

    def __init__(self, data: bytes = b"") -> None:
        self._hash = None
        self._body: bytes | None = None  # a kept body, not hashed yet
        if data:
            self.update(data)

    def update(self, data) -> None:
        if self._hash is None and self._body is None and _memo.kept(data):
            self._body = data
            return
        if self._hash is None:
            self._hash = hashlib.sha256()
            if self._body is not None:
                self._hash.update(self._body)
                self._body = None
        self._hash.update(data)

    def digest(self) -> bytes:
        if self._body is not None:
            return _memo.sha256(self._body)
        return (self._hash or hashlib.sha256()).digest()

    def hexdigest(self) -> str:
        return self.digest().hex()

    def copy(self) -> KeptBodySha256:
        other = KeptBodySha256()
        other._body = self._body
        other._hash = self._hash.copy() if self._hash is not None else None
        return other


def forget_bodies() -> None:
    """Drop the kept canonical bodies: a bench repeating one message measures each
    repetition as a new message."""
    _memo.clear()
    _RELAXED_MEMO.clear()


def _canonicalize_body(self, body: bytes) -> bytes:
    if self.body_algorithm in _CANON:
        return _memo.get(self.body_algorithm, body)
    return self.body_algorithm.canonicalize_body(body)


@functools.lru_cache(maxsize=1024)
def _cached_evaluate_pk(name, record):
    return _evaluate_pk(name, record)


def evaluate_pk(name, record):
    """dkimpy's parse of a key record, kept per (name, text); errors are not kept."""
    try:
        return _cached_evaluate_pk(name, record)
    except TypeError:  # an unhashable record: not ours to cache
        return _evaluate_pk(name, record)


_AR_PREFIX = "Authentication-Results: "
_parse_results = authres.AuthenticationResultsHeader.parse
_built_results: OrderedDict[str, object] = OrderedDict()
_built_lock = threading.Lock()
BUILT_RESULTS_ENTRIES = 64


def remember_results(value: str, header) -> None:
    """``header`` is what parsing ``Authentication-Results: value`` gives."""
    if "\n" in value:
        return
    with _built_lock:
        _built_results[_AR_PREFIX + value] = header
        while len(_built_results) > BUILT_RESULTS_ENTRIES:
            _built_results.popitem(last=False)


def _parse_authentication_results(cls, string):  # noqa: ARG001 - classmethod shape
    with _built_lock:
        found = _built_results.get(string)
    return found if found is not None else _parse_results(string)


_relaxed_headers = canon.Relaxed.canonicalize_headers
_SHIPPED = [  # (owner, attribute, dkimpy's own, ours)
    (dkim, "rfc822_parse", dkim.rfc822_parse, parse_message),
    (dkim, "evaluate_pk", dkim.evaluate_pk, evaluate_pk),
    (canon.Relaxed, "canonicalize_headers", canon.Relaxed.__dict__["canonicalize_headers"],
     staticmethod(relaxed_headers)),
    (canon.CanonicalizationPolicy, "canonicalize_body",
     canon.CanonicalizationPolicy.__dict__["canonicalize_body"], _canonicalize_body),
    (authres.AuthenticationResultsHeader, "parse",
     authres.AuthenticationResultsHeader.__dict__["parse"],
     classmethod(_parse_authentication_results)),
]  # fmt: skip
for owner, attribute, _theirs, ours in _SHIPPED:
    setattr(owner, attribute, ours)
# (table, algorithm, dkimpy's, ours): the tables dkimpy picks its hash from
_SHIPPED_HASHES = [(table, alg, table[alg], KeptBodySha256)
                   for table in (dkim.crypto.HASH_ALGORITHMS, dkim.crypto.ARC_HASH_ALGORITHMS)
                   for alg in (b"rsa-sha256", b"ed25519-sha256") if alg in table]  # fmt: skip
for table, alg, _theirs, ours in _SHIPPED_HASHES:
    table[alg] = ours


@contextlib.contextmanager
def dkimpy_as_shipped(keep_openssl_signing: bool = False) -> Iterator[None]:
    """dkimpy's (and authres') own helpers back in place for a while, RSA included unless
    ``keep_openssl_signing``: what the tests compare against and the bench measures. Not
    for use while mail flows."""
    from aliasd.mailauth import fastrsa

    rsa = [r for r in fastrsa.SHIPPED
           if not (keep_openssl_signing and r[1] == "RSASSA_PKCS1_v1_5_sign")]  # fmt: skip
    replaced = _SHIPPED + rsa
    for owner, attribute, theirs, _ours in replaced:
        setattr(owner, attribute, theirs)
    for table, alg, theirs, _ours in _SHIPPED_HASHES:
        table[alg] = theirs
    try:
        yield
    finally:
        for owner, attribute, _theirs, ours in replaced:
            setattr(owner, attribute, ours)
        for table, alg, _theirs, ours in _SHIPPED_HASHES:
            table[alg] = ours
authres.AuthenticationResultsHeader.parse = classmethod(_parse_authentication_results)

"""A tolerant view of one raw message for rules and Bayes.

Built on the standard library's parser with the lenient ``compat32`` policy: broken MIME,
undecodable headers, unknown charsets and binary junk all give *some* view, never an
exception (the parser records defects instead of raising)."""

from __future__ import annotations

import email.header
import email.utils
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32

from aliasd.scanner.markup import Invisible, html_to_text, invisible

MAX_TEXT = 300_000  # characters of decoded text kept per message (Bayes, content rules)
MAX_PARTS = 200  # MIME parts walked; bombs with thousands of parts stop here
MAX_HEADER_VALUE = 4000  # characters of one header value kept after decoding
# What the MIME parser reads. The standard library's parser costs a few microseconds a
# line and, inside nested multiparts, checks each line against every open boundary:
# 600,000 three-byte lines 100 levels deep took 19 s. A 2 MB message of real mail has
# about 30,000 lines (base64 and text run 70-80 characters a line) and at most a few
# levels; the rest of a message past these limits is not parsed (nor scanned).
MAX_PARSE_LINES = 60_000
MAX_MULTIPARTS = 20  # multipart boundaries declared (nesting, forwarded messages)
MAX_DELIMITERS = 1_000  # lines starting with "--" in a multipart message (parts)

# Every pattern here is linear in its input: no two adjacent parts can match the same
# characters (the classic trap is ``\s*["']?\s*``, quadratic on a run of spaces), and
# bounded repeats cap the work per starting position.
_HREF = re.compile(r"""href\s*=\s*(?:["']\s*)?([^"'\s>]{1,2000})""", re.I)
_URL_FULL = re.compile(r"\bhttps?://([a-z0-9.-]{1,253})(?::\d+)?(/[^\s\"'<>]{0,200})?", re.I)
_HTML_TAG = re.compile(r"<\s*([a-z][a-z0-9]{0,15})\b([^<>]{0,500})>", re.I)
_HTML_ATTR = re.compile(r"\b([a-z][a-z-]{0,20})\s*=", re.I)
MAX_HTML_TAGS = 400  # tags looked at per message for Bayes structure tokens


# The common shapes of an address header: "Name" <a@b>, Name <a@b>, <a@b>, a@b. Read
# directly (email.utils.parseaddr is pure Python and costs more than all of a message's
# header rules); anything else (comments, groups, quoted pairs, several addresses) goes
# through parseaddr.
_SIMPLE_ADDR = re.compile(r'^(?:"([^"\\]{0,200})"|([^"<>@,;:()\\]{0,200}?))?\s{0,20}<([^<>\s@,;:()"\[\]]{1,200}@[^<>\s@,;:()"\[\]]{1,200})>$'
                          r'|^([^<>\s@,;:()"\[\]]{1,200}@[^<>\s@,;:()"\[\]]{1,200})$')


_RETURN_PATH = re.compile(rb"^return-path:[ \t]*<?([^>\s]*)>?", re.I | re.M)
RETURN_PATH_SCAN = 64_000  # bytes of header searched


def recorded_envelope_from(raw: bytes) -> str:
    """The envelope sender the delivering MTA recorded in Return-Path, for stored mail
    scanned without one: what SpamAssassin takes as its EnvelopeFrom then. "" if none."""
    head = raw[:RETURN_PATH_SCAN]
    end = min((i for i in (head.find(b"\n\n"), head.find(b"\r\n\r\n")) if i >= 0), default=len(head))
    m = _RETURN_PATH.search(head, 0, end)
    return m.group(1).decode("latin-1") if m else ""


def parse_address(text: str) -> tuple[str, str]:
    """(display name, address) as ``email.utils.parseaddr`` gives them."""
    m = _SIMPLE_ADDR.match(text.strip())
    if m:
        if m.group(4):
            return "", m.group(4)
        return (m.group(1) if m.group(1) is not None else (m.group(2) or "").strip()), m.group(3)
    try:
        return email.utils.parseaddr(text)
    except Exception:  # noqa: BLE001 - garbled header: no address
        return "", ""


def header_items(msg: Message, limit: int) -> list[tuple[str, object]]:
    """``msg.items()[:limit]`` without its per-header policy call where it changes
    nothing: compat32 hands an ASCII value back as it is (only 8-bit values become
    Header objects)."""
    fetch = msg.policy.header_fetch_parse
    return [(k, v if isinstance(v, str) and v.isascii() else fetch(k, v))
            for k, v in itertools.islice(msg.raw_items(), limit)]


def names_charset(part: Message) -> bool:
    """Whether the part's Content-Type could carry a charset parameter. Where it cannot
    (multipart containers, most attachments), ``get_param("charset")`` and
    ``get_content_charset()`` give their default without parsing the parameters, the
    costly part: every spelling of the parameter (``charset*``, ``charset*0*``, a bare
    ``charset``) holds the word."""
    ctype = part.get("content-type")
    return ctype is not None and "charset" in str(ctype).lower()


def decode_header_value(raw: object) -> str:
    """RFC 2047 decoding that never raises: bad charsets and encodings degrade to
    replacement characters."""
    if raw is None:
        return ""
    if isinstance(raw, email.header.Header):
        raw = str(raw)
    text = str(raw)[:MAX_HEADER_VALUE]
    if "=?" not in text:
        if "\n" not in text and "\t" not in text and "  " not in text and "\r" not in text:
            return text.strip()  # nothing to fold (most headers)
        return " ".join(text.split())  # str.split's white space is re's \s: the same text
    try:
        parts = email.header.decode_header(text)
    except Exception:  # noqa: BLE001 - malformed encoded words: keep the raw text
        return " ".join(text.split())
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            out.append(_decode_bytes(chunk, charset))
        else:
            out.append(chunk)
    return " ".join("".join(out).split())


def _decode_bytes(data: bytes, charset: str | None) -> str:
    if charset:
        try:
            return data.decode(charset, errors="replace")
        except (LookupError, ValueError):
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


@dataclass
class ParsedMessage:
    raw: bytes
    msg: Message
    header_names: list[str] = field(default_factory=list)  # lower case, in order
    subject: str | None = None
    from_raw: str | None = None
    from_name: str = ""
    from_addr: str = ""
    to_raw: str | None = None
    date_raw: str | None = None
    message_id: str | None = None
    received_count: int = 0  # Received headers
    top_received: str | None = None  # the topmost one, decoded (the others are not read)
    content_type: str = "text/plain"
    text_plain: str = ""
    text_html: str = ""  # tags stripped
    html_raw_len: int = 0
    html_raw: str = ""  # the HTML parts as written (first MAX_TEXT characters): HTML and URL evidence
    has_plain: bool = False
    has_html: bool = False
    attachments: list[str] = field(default_factory=list)  # content types of non-text parts
    url_hosts: list[str] = field(default_factory=list)
    url_paths: list[str] = field(default_factory=list)  # path of each link, as written
    html_tags: set[str] = field(default_factory=set)  # "font", "font.color", ...
    part_types: list[str] = field(default_factory=list)  # "text/html/base64" per leaf part
    defects: int = 0
    parts: int = 0
    bad_7bit: bool = False  # a text part declared 7bit carries 8-bit bytes
    missing_charset: bool = False  # a text part with 8-bit bytes and no charset
    parse_truncated: bool = False  # the MIME parser read only a prefix (parse_input)
    # rendered text of each text/plain and text/html part, by id() of the part (SpamAssassin's
    # multipart_alternative_difference compares the parts of an alternative)
    rendered: dict[int, str] = field(default_factory=dict, repr=False, compare=False)
    _first: dict[str, tuple[str, object]] | None = field(default=None, repr=False, compare=False)
    _charsets: dict[int, str | None] = field(default_factory=dict, repr=False, compare=False)
    _invisible: Invisible | None = field(default=None, repr=False, compare=False)

    @property
    def from_domain(self) -> str | None:
        if "@" not in self.from_addr:
            return None
        return self.from_addr.rpartition("@")[2].strip().strip(">").lower() or None

    def header(self, name: str) -> str | None:
        """The first ``name`` header, decoded (``Message.get`` walks every header and
        re-parses it on each call; rules ask for a dozen)."""
        first = self._first
        if first is None:
            first = self._first = {}
            for k, v in self.msg.raw_items():
                first.setdefault(k.lower(), (k, v))
        found = first.get(name.lower())
        if found is None:
            return None
        k, v = found
        if not (isinstance(v, str) and v.isascii()):  # as header_items: ASCII comes back as it is
            v = self.msg.policy.header_fetch_parse(k, v)
        return decode_header_value(v)

    def charset(self, part: Message) -> str | None:
        """``part.get_content_charset()`` of one of this message's parts, parsed once
        (the text is decoded with it, Bayes learns it)."""
        key = id(part)
        if key not in self._charsets:
            self._charsets[key] = part.get_content_charset() if names_charset(part) else None
        return self._charsets[key]

    @property
    def invisible(self) -> Invisible:
        """Where the HTML's invisible text lies (found once: the rules and Bayes ask)."""
        if self._invisible is None:
            self._invisible = invisible(self.html_raw)
        return self._invisible

    @property
    def text(self) -> str:
        """All readable text: plain parts, then HTML parts with tags removed."""
        if self.text_plain and self.text_html:
            # multipart/alternative carries the same words twice; keep one copy
            return self.text_plain if len(self.text_plain) * 2 > len(self.text_html) else self.text_html
        return self.text_plain or self.text_html


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse leniently. Never raises for any input."""
    if not isinstance(raw, bytes | bytearray):
        raw = str(raw).encode("utf-8", "replace")
    raw = bytes(raw)
    # Mail over SMTP (the milter's) ends its lines in CRLF, stored mail mostly in LF: its
    # parts are read with LF either way, as SpamAssassin reads them; the raw message (full
    # rules, digests) stays as it came.
    first = raw.find(b"\n")
    text = raw.replace(b"\r\n", b"\n") if first > 0 and raw[first - 1] == 13 else raw
    parsed = parse_input(text)
    try:
        msg = parse_mime(parsed)
    except Exception:  # noqa: BLE001 - the parser should not raise, but never trust it
        msg = Message()
        msg.set_payload(text.decode("latin-1"))
    pm = ParsedMessage(raw=raw, msg=msg, parse_truncated=len(parsed) < len(text))
    try:
        _fill(pm)
    except Exception:  # noqa: BLE001 - a pathological message still gets a (partial) view
        pm.defects += 1
    return pm


def parse_mime(raw: bytes) -> Message:
    """``BytesParser(policy=compat32).parsebytes(raw)``, the same message object, made
    faster for the usual single-part message: the stdlib parser reads a body line by
    line in Python, here only the header block is parsed and the body, taken whole, is
    the payload the parser would have joined from its lines. Whatever the header parse
    does not end cleanly at the first empty line (defects, a line that is no header),
    and the types whose body is parsed further (multipart, message), take the stdlib's
    whole parse."""
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\r\n\r\n")) if i >= 0]
    if ends:
        end = min(ends)
        body_at = end + (2 if raw[end : end + 2] == b"\n\n" else 4)
        low = raw[:body_at].lower()
        if b"multipart" in low or b"message/" in low:  # parsed further: the headers once, not twice
            return BytesParser(policy=compat32).parsebytes(raw)
        msg = BytesParser(policy=compat32).parsebytes(raw[:body_at], headersonly=True)
        if not msg.get_payload() and not msg.defects and msg.get_content_maintype() not in ("multipart", "message"):
            msg.set_payload(raw[body_at:].decode("ascii", "surrogateescape"))  # as parsebytes decodes
            return msg
    return BytesParser(policy=compat32).parsebytes(raw)


def _nth(data: bytes, needle: bytes, n: int) -> int:
    """Index of the n-th (1-based) occurrence of needle, or -1."""
    pos = -1
    for _ in range(n):
        pos = data.find(needle, pos + 1)
        if pos < 0:
            return -1
    return pos


def parse_input(raw: bytes) -> bytes:
    """The prefix of ``raw`` the MIME parser reads: at most MAX_PARSE_LINES lines and,
    in a multipart message, up to the MAX_MULTIPARTS+1-th boundary declaration or the
    MAX_DELIMITERS+1-th delimiter line, so parsing time stays linear and small."""
    cut = len(raw)
    if raw.count(b"\n") > MAX_PARSE_LINES:
        cut = _nth(raw, b"\n", MAX_PARSE_LINES) + 1
    end = raw.find(b"\n\n")
    end_crlf = raw.find(b"\r\n\r\n")
    head_end = min(e for e in (end, end_crlf, cut) if e >= 0)
    if b"multipart" in raw[:head_end].lower():
        low = raw[:cut].lower()
        if low.count(b"boundary") > MAX_MULTIPARTS:
            line = low.rfind(b"\n", 0, _nth(low, b"boundary", MAX_MULTIPARTS + 1)) + 1
            cut = min(cut, max(line, head_end))
        if low.count(b"\n--") > MAX_DELIMITERS:
            cut = min(cut, max(_nth(low, b"\n--", MAX_DELIMITERS + 1) + 1, head_end))
    return raw if cut >= len(raw) else raw[:cut]


def _fill(pm: ParsedMessage) -> None:
    msg = pm.msg
    pm.header_names = [k.lower() for k in msg]
    pm.subject = pm.header("Subject") if "subject" in pm.header_names else None
    pm.from_raw = pm.header("From") if "from" in pm.header_names else None
    if pm.from_raw:
        name, addr = parse_address(pm.from_raw)
        pm.from_name, pm.from_addr = name, addr.lower()
    pm.to_raw = pm.header("To") if "to" in pm.header_names else None
    pm.date_raw = pm.header("Date") if "date" in pm.header_names else None
    mid = msg.get("Message-ID")
    pm.message_id = str(mid)[:MAX_HEADER_VALUE].strip() if mid is not None else None
    pm.received_count = pm.header_names.count("received")
    pm.top_received = pm.header("Received") if pm.received_count else None
    pm.content_type = msg.get_content_type()
    pm.defects = len(msg.defects)

    plain: list[str] = []
    htmls: list[str] = []
    raw_htmls: list[str] = []
    size = 0
    for part in msg.walk():
        pm.parts += 1
        if pm.parts > MAX_PARTS:
            break
        pm.defects += len(part.defects)
        if part.is_multipart():
            pm.part_types.append(part.get_content_type())
            continue
        ctype = part.get_content_type()
        cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()[:20]
        pm.part_types.append(f"{ctype}/{cte}")
        disposition = (part.get("Content-Disposition") or "").lower()
        if ctype in ("text/plain", "text/html") and "attachment" not in disposition:
            if size > MAX_TEXT:
                continue
            _check_8bit(pm, part)
            text = _part_text(part, pm.charset(part), cte)
            size += len(text)
            if ctype == "text/plain":
                pm.has_plain = True
                plain.append(text)
                pm.rendered[id(part)] = text
            else:
                pm.has_html = True
                pm.html_raw_len += len(text)
                raw_htmls.append(text)
                for href in _HREF.findall(text):
                    m = _URL_FULL.match(href)
                    if m:
                        pm.url_hosts.append(m.group(1).lower())
                        pm.url_paths.append(m.group(2) or "")
                _html_tags(pm, text)
                htmls.append(html_to_text(text))
                pm.rendered[id(part)] = htmls[-1]
        elif part is not msg or not ctype.startswith("text/"):
            pm.attachments.append(ctype)
    pm.text_plain = "\n".join(plain)[:MAX_TEXT]
    pm.text_html = "\n".join(htmls)[:MAX_TEXT]
    pm.html_raw = "\n".join(raw_htmls)[:MAX_TEXT]
    for m in _URL_FULL.finditer(pm.text_plain):
        pm.url_hosts.append(m.group(1).lower())
        pm.url_paths.append(m.group(2) or "")
    if len(pm.url_hosts) > 200:
        pm.url_hosts = pm.url_hosts[:200]
        pm.url_paths = pm.url_paths[:200]


def _html_tags(pm: ParsedMessage, markup: str) -> None:
    """Tag and tag.attribute names of the first tags: how the HTML was written (fonts,
    colours, tables, images) tells mass mailers from people better than its words."""
    tags = pm.html_tags
    # each distinct tag as written once: mail repeats the same <td ...> and <font ...>
    for name, attrs in {m.groups() for m in itertools.islice(_HTML_TAG.finditer(markup), MAX_HTML_TAGS)}:
        tag = name.lower()
        tags.add(tag)
        if "=" in attrs:
            for attr in _HTML_ATTR.findall(attrs):
                tags.add(tag + "." + attr.lower())


def _check_8bit(pm: ParsedMessage, part: Message) -> None:
    cte = str(part.get("Content-Transfer-Encoding", "7bit")).strip().lower()
    if cte not in ("7bit", "8bit", ""):
        return
    raw = part.get_payload()
    if not isinstance(raw, str):
        return
    # compat32 keeps undecodable bytes as surrogates or latin-1 characters above 0x7f
    if raw[:20_000].isascii():
        return
    if cte in ("7bit", "") and "content-transfer-encoding" in {k.lower() for k in part}:
        pm.bad_7bit = True
    if not names_charset(part) or part.get_param("charset") is None:
        pm.missing_charset = True


def _part_text(part: Message, charset: str | None, cte: str) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - broken transfer encoding
        payload = None
    if payload is None:
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    if not isinstance(payload, bytes):
        return str(payload)
    payload = payload[: MAX_TEXT * 2]
    if cte in ("base64", "quoted-printable"):
        # the sender's line breaks inside the encoding, as SpamAssassin's Node.pm reads them
        payload = payload.replace(b"\r\n", b"\n")
    return _decode_bytes(payload, charset)


# What the author wrote, which every copy of a message keeps wherever it was delivered or
# forwarded. Everything else differs per copy: transport and scanner headers of each
# mailbox provider on the way (Received, X-Received, Received-SPF, X-Gm-*, ARC, ...) and
# what forwarding through aliasd adds or rewrites (the one-click List-Unsubscribe, the
# reverse alias's Reply-To, X-Aliasd-*, signatures).
_AUTHOR_HEADERS = frozenset({
    b"from", b"sender", b"to", b"cc", b"subject", b"date", b"message-id", b"in-reply-to",
    b"references", b"mime-version", b"content-type", b"content-transfer-encoding"})


def message_digest(raw: bytes) -> str:
    """sha256 of the author's headers (unfolded, whitespace collapsed, by name) and the
    body, line endings normalised: the same message learned again from another mailbox
    or copy (the owner's forwarded copy of a message taught on the web, say) gives the
    same digest, so it is never counted twice."""
    data = raw.replace(b"\r\n", b"\n")
    head, sep, body = data.partition(b"\n\n")
    fields: list[list[bytes]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if fields:
                fields[-1].append(line)
            continue
        fields.append([line])
    kept: list[bytes] = []
    for lines in fields:
        name, colon, value = b" ".join(lines).partition(b":")
        name = name.strip().lower()
        if colon and name in _AUTHOR_HEADERS:
            kept.append(name + b":" + b" ".join(value.split()))
    h = hashlib.sha256()
    h.update(b"\n".join(sorted(kept)))
    h.update(b"\n\n")
    h.update(b"\n".join(line.rstrip() for line in body.rstrip().split(b"\n")))
    return h.hexdigest()

"""The milter protocol (version 6, as Postfix and sendmail speak it) as bytes in, bytes
out: framing, the MTA's commands decoded, our replies encoded. No sockets here.

A frame is a 4-byte big-endian length (command byte included), one command byte and
its data. Strings are NUL-terminated. The constants keep libmilter's names (mfdef.h),
so Postfix's milter8.c and this module can be read side by side.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 6

# Commands from the MTA.
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# Replies to the MTA.
SMFIR_ADDRCPT = b"+"
SMFIR_DELRCPT = b"-"
SMFIR_ACCEPT = b"a"
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"
SMFIR_DISCARD = b"d"
SMFIR_CHGFROM = b"e"
SMFIR_ADDHEADER = b"h"
SMFIR_INSHEADER = b"i"
SMFIR_CHGHEADER = b"m"
SMFIR_QUARANTINE = b"q"
SMFIR_REJECT = b"r"
SMFIR_TEMPFAIL = b"t"
SMFIR_REPLYCODE = b"y"

# Actions a milter may take (negotiated).
SMFIF_ADDHDRS = 0x01
SMFIF_CHGBODY = 0x02
SMFIF_ADDRCPT = 0x04
SMFIF_DELRCPT = 0x08
SMFIF_CHGHDRS = 0x10
SMFIF_QUARANTINE = 0x20
SMFIF_CHGFROM = 0x40
SMFIF_SETSYMLIST = 0x100  # the milter names the macros it wants at a stage
SMFIM_CONNECT = 0  # macro stages of the negotiation reply's symbol lists

# Protocol steps: what the MTA leaves out (NO*) or sends without waiting (NR_*).
SMFIP_NOCONNECT = 1 << 0
SMFIP_NOHELO = 1 << 1
SMFIP_NOMAIL = 1 << 2
SMFIP_NORCPT = 1 << 3
SMFIP_NOBODY = 1 << 4
SMFIP_NOHDRS = 1 << 5
SMFIP_NOEOH = 1 << 6
SMFIP_NR_HDR = 1 << 7
SMFIP_NOUNKNOWN = 1 << 8
SMFIP_NODATA = 1 << 9
SMFIP_SKIP = 1 << 10
SMFIP_RCPT_REJ = 1 << 11
SMFIP_NR_CONN = 1 << 12
SMFIP_NR_HELO = 1 << 13
SMFIP_NR_MAIL = 1 << 14
SMFIP_NR_RCPT = 1 << 15
SMFIP_NR_DATA = 1 << 16
SMFIP_NR_UNKN = 1 << 17
SMFIP_NR_EOH = 1 << 18
SMFIP_NR_BODY = 1 << 19

# Which commands go unanswered under which negotiated flag.
NO_REPLY_FLAG = {
    SMFIC_CONNECT: SMFIP_NR_CONN,
    SMFIC_HELO: SMFIP_NR_HELO,
    SMFIC_MAIL: SMFIP_NR_MAIL,
    SMFIC_RCPT: SMFIP_NR_RCPT,
    SMFIC_DATA: SMFIP_NR_DATA,
    SMFIC_UNKNOWN: SMFIP_NR_UNKN,
    SMFIC_EOH: SMFIP_NR_EOH,
    SMFIC_HEADER: SMFIP_NR_HDR,
    SMFIC_BODY: SMFIP_NR_BODY,
}

# Postfix sends body chunks of at most 64 KiB (1 MiB if a milter asks for it); nothing
# legitimate comes near this, and a peer claiming more is not a milter client.
MAX_FRAME = 2 * 1024 * 1024

_LENGTH = struct.Struct(">I")
_NEGOTIATION = struct.Struct(">III")
_STAGE = struct.Struct(">I")


class ProtocolError(ValueError):
    """A frame or a command's data that breaks the protocol: the connection ends."""


class FrameReader:
    """Cuts a byte stream into (command, data) frames. A frame split over many reads is
    joined once, when it is complete (no copying per read)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._max_frame = max_frame
        self._pieces: list[bytes] = []
        self._have = 0
        self._need = 4  # bytes before the next frame can be cut

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        if self._pieces:
            self._pieces.append(data)
            self._have += len(data)
            if self._have < self._need:
                return []
            data = b"".join(self._pieces)
            self._pieces = []
        frames = []
        unpack = _LENGTH.unpack_from
        start = 0
        end = len(data)
        while end - start >= 4:
            (length,) = unpack(data, start)
            if length < 1 or length > self._max_frame:
                raise ProtocolError("empty frame" if length < 1 else
                                    f"frame of {length} bytes (limit {self._max_frame})")
            stop = start + 4 + length
            if stop > end:
                break
            frames.append((data[start + 4:start + 5], data[start + 5:stop]))
            start = stop
        if start < end:
            rest = data[start:]
            self._pieces = [rest]
            self._have = len(rest)
            self._need = 4 + unpack(rest)[0] if len(rest) >= 4 else 4
        else:
            self._have = 0
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return self._have if self._pieces else 0


def frame(command: bytes, data: bytes = b"") -> bytes:
    return _LENGTH.pack(len(data) + 1) + command + data


# --- what the MTA sends ---------------------------------------------------------------
@dataclass(frozen=True)
class Negotiation:
    version: int
    actions: int
    protocol: int


def parse_negotiation(data: bytes) -> Negotiation:
    if len(data) < 12:
        raise ProtocolError(f"option negotiation of {len(data)} bytes (needs 12)")
    return Negotiation(*_NEGOTIATION.unpack_from(data))


def negotiation_reply(version: int, actions: int, protocol: int,
                      macros: dict[int, str] | None = None) -> bytes:
    """The option negotiation answer; ``macros`` (stage -> space-separated names, with
    SMFIF_SETSYMLIST in ``actions``) asks the MTA for those macros at those stages."""
    lists = b"".join(_STAGE.pack(stage) + names.encode("ascii") + b"\0"
                     for stage, names in (macros or {}).items())
    return frame(SMFIC_OPTNEG, _NEGOTIATION.pack(version, actions, protocol) + lists)


def strings(data: bytes) -> list[bytes]:
    """NUL-terminated strings (a missing last terminator is forgiven)."""
    if not data:
        return []
    parts = data.split(b"\0")
    if parts[-1] == b"":
        parts.pop()
    return parts


def parse_macros(data: bytes) -> tuple[bytes, dict[str, str]]:
    """(the command they belong to, name -> value). Names keep their braces, as
    Postfix sends them (``i``, ``{auth_authen}``)."""
    if not data:
        raise ProtocolError("macro frame without a command")
    items = strings(data[1:])
    values = {}
    for index in range(0, len(items) - 1, 2):
        values[_text(items[index])] = _text(items[index + 1])
    return data[:1], values


@dataclass(frozen=True)
class Connect:
    hostname: str
    family: str  # "4", "6", "L" (unix), "U" (unknown)
    port: int
    address: str


def parse_connect(data: bytes) -> Connect:
    hostname, sep, rest = data.partition(b"\0")
    if not sep or not rest:
        raise ProtocolError("connect without host name and family")
    family = chr(rest[0])
    port = 0
    address = ""
    if family in ("4", "6", "L") and len(rest) >= 3:
        port = int.from_bytes(rest[1:3], "big")
        address = _text(rest[3:].split(b"\0", 1)[0])
    return Connect(_text(hostname), family, port, address)


def parse_address_command(data: bytes) -> tuple[bytes, list[bytes]]:
    """MAIL or RCPT: the address as sent (``<a@b>``) and its ESMTP parameters."""
    items = strings(data)
    if not items:
        raise ProtocolError("MAIL/RCPT without an address")
    return items[0], items[1:]


def parse_header(data: bytes) -> tuple[bytes, bytes]:
    name, sep, value = data.partition(b"\0")
    if not sep:
        raise ProtocolError("header without a value")
    if value.endswith(b"\0"):
        value = value[:-1]
    return name, value


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# --- what we send ----------------------------------------------------------------------
def _z(text: str | bytes) -> bytes:
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        raise ValueError("NUL in a milter string")
    return raw + b"\0"


def add_header(name: str, value: str) -> bytes:
    return frame(SMFIR_ADDHEADER, _z(name) + _z(value))


def insert_header(index: int, name: str, value: str) -> bytes:
    return frame(SMFIR_INSHEADER, _LENGTH.pack(index) + _z(name) + _z(value))


def change_header(name: str, index: int, value: str) -> bytes:
    """Replace occurrence ``index`` (from 1) of ``name``; an empty value deletes it."""
    return frame(SMFIR_CHGHEADER, _LENGTH.pack(index) + _z(name) + _z(value))


def add_recipient(address: str) -> bytes:
    return frame(SMFIR_ADDRCPT, _z(address))


def delete_recipient(address: str) -> bytes:
    return frame(SMFIR_DELRCPT, _z(address))


def change_sender(address: str) -> bytes:
    return frame(SMFIR_CHGFROM, _z(address))


# libmilter sends a replaced body in pieces of at most this (MILTER_CHUNK_SIZE).
BODY_CHUNK = 65535


def replace_body(body: bytes) -> bytes:
    """The whole new body (CRLF line ends, as Postfix sent it), in as many frames as it
    takes; Postfix joins them."""
    return b"".join(frame(SMFIR_REPLBODY, body[start:start + BODY_CHUNK])
                    for start in range(0, len(body), BODY_CHUNK)) or frame(SMFIR_REPLBODY)


def quarantine(reason: str) -> bytes:
    return frame(SMFIR_QUARANTINE, _z(reason))


def reply_code(code: str, xcode: str, text: str) -> bytes:
    """An SMTP reply for reject/tempfail. Postfix reads '%%' as '%' and drops a lone
    '%' (sendmail treats the text as a format string), so '%' is doubled."""
    line = f"{code} {xcode} {text}".replace("\r", " ").replace("\n", " ")
    return frame(SMFIR_REPLYCODE, _z(line.replace("%", "%%")))

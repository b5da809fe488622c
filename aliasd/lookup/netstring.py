"""Sans-IO netstrings (``<len>:<payload>,``) for the socketmap protocol.

The decoder is fed whatever bytes arrived and hands back complete payloads; it never
touches a socket, so every split point of a frame can be tested byte by byte. Errors are
typed so the server can answer and close: after a framing error the byte stream can no
longer be trusted (we cannot tell where the next frame starts)."""

from __future__ import annotations


class NetstringError(ValueError):
    """The peer broke the netstring framing; the connection should be closed."""


class MalformedNetstring(NetstringError):
    """A length that is not decimal digits, or a payload not followed by ``,``."""


class NetstringTooLong(NetstringError):
    """The announced payload is longer than the decoder accepts."""


def encode(payload: bytes) -> bytes:
    return b"%d:%b," % (len(payload), payload)


class NetstringDecoder:
    """Incremental decoder: ``feed(data)`` then ``next_frame()`` until it returns None."""

    __slots__ = ("_buf", "_pos", "max_length", "_max_digits", "_failed")

    def __init__(self, max_length: int = 100_000) -> None:
        self.max_length = max_length
        self._max_digits = len(str(max_length))
        self._buf = bytearray()
        self._pos = 0  # start of the first unconsumed byte in _buf
        self._failed: NetstringError | None = None

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            # Everything consumed: start over instead of growing a dead prefix.
            self._buf.clear()
            self._pos = 0
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received but not yet returned as a frame (a partial frame)."""
        return len(self._buf) - self._pos

    def next_frame(self) -> bytes | None:
        """The next complete payload, None when more bytes are needed.

        Raises NetstringError subclasses; once raised, every later call raises again."""
        if self._failed is not None:
            raise self._failed
        buf, pos = self._buf, self._pos
        if pos == len(buf):
            return None
        colon = buf.find(b":", pos, pos + self._max_digits + 1)
        if colon < 0:
            head = bytes(buf[pos : pos + self._max_digits + 1])
            if not head.isdigit():
                return self._fail(MalformedNetstring(f"bad netstring length {head[:20]!r}"))
            if len(head) > self._max_digits:
                return self._fail(NetstringTooLong("netstring length has too many digits"))
            return None  # the length is still arriving
        digits = bytes(buf[pos:colon])
        if not digits.isdigit():  # also refuses an empty length, signs and spaces
            return self._fail(MalformedNetstring(f"bad netstring length {digits[:20]!r}"))
        length = int(digits)
        if length > self.max_length:
            return self._fail(
                NetstringTooLong(f"netstring of {length} bytes exceeds {self.max_length}")
            )
        end = colon + 1 + length
        if len(buf) <= end:
            return None  # payload or its trailing comma still arriving
        if buf[end] != 0x2C:  # ","
            return self._fail(MalformedNetstring("netstring payload not followed by ','"))
        payload = bytes(buf[colon + 1 : end])
        self._pos = end + 1
        if self._pos > 65536 and self._pos * 2 > len(buf):
            # Drop consumed bytes now and then so pipelined input cannot pile up.
            del buf[: self._pos]
            self._pos = 0
        return payload

    def _fail(self, error: NetstringError) -> None:
        self._failed = error
        raise error

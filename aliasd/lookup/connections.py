"""One Postfix client connection of the lookup server: socketmap (netstring frames,
every map by name) or tcp_table (one line per request, one map). Requests are answered
strictly in order, also when pipelined; framing errors get an error reply and a close;
a client that does not read its replies stops being read; idle clients are closed."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from aliasd.core.decision import Decision
from aliasd.lookup import socketmap, tcp_table
from aliasd.lookup.maps import LookupMap
from aliasd.lookup.netstring import NetstringDecoder, NetstringError, NetstringTooLong

if TYPE_CHECKING:
    from aliasd.lookup.server import LookupServer

log = logging.getLogger("aliasd.lookup")

# Requests queued behind a slow lookup before we stop reading from that client; bounds
# the memory one pipelining client can take.
MAX_QUEUED = 1000

Formatter = Callable[[Decision], bytes]


class LookupConnection(asyncio.Protocol):
    """What both protocols share: ordered replies, idle timeout, backpressure."""

    format_reply: Formatter

    def __init__(self, server: LookupServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        # Pending work in arrival order: (map, key, None) to look up, or
        # (None, "", reply) for a canned reply; a reply of b"" means "close now".
        self.queue: deque[tuple[LookupMap | None, str, bytes | None]] = deque()
        self.worker: asyncio.Task | None = None
        self.closing = False
        self.last_request = time.monotonic()
        self.idle_timer: asyncio.TimerHandle | None = None
        self._pauses: set[str] = set()  # why reading is paused: "write", "queue"

    # --- asyncio callbacks ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small request/reply exchanges: never wait for Nagle.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.server.admit(self):
            self.closing = True
            transport.close()
            return
        self.server.connections.add(self)
        self._arm_idle_timer(self.server.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        if self.worker is not None:
            self.worker.cancel()
        self.queue.clear()

    def pause_writing(self) -> None:
        # The client does not read its replies: stop reading its requests.
        self._pause("write")

    def resume_writing(self) -> None:
        self._resume("write")

    def _pause(self, reason: str) -> None:
        if not self._pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._pauses.add(reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._pauses:
            return
        self._pauses.discard(reason)
        if not self._pauses and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        # Half-close: answer what is queued, then close (returning True keeps it open).
        if self.worker is None:
            return False
        self.queue.append((None, "", b""))
        return True

    # --- request handling -------------------------------------------------------------
    def submit(self, lookup_map: LookupMap, key: str) -> None:
        self.last_request = time.monotonic()
        if self.worker is None:
            fast = getattr(lookup_map, "lookup_fast", None)
            if fast is not None:
                try:
                    decision = fast(key)
                except Exception:
                    log.exception("lookup in %s failed", lookup_map.name)
                    decision = Decision.temp("lookup failed")
                if decision is not None:
                    self.transport.write(self.format_reply(decision))  # type: ignore[union-attr]
                    return
        self.queue.append((lookup_map, key, None))
        if len(self.queue) >= MAX_QUEUED:
            self._pause("queue")
        self._start_worker()

    def reply(self, data: bytes) -> None:
        self.last_request = time.monotonic()
        if self.worker is None:
            self.transport.write(data)  # type: ignore[union-attr]
        else:
            self.queue.append((None, "", data))

    def fail(self, data: bytes) -> None:
        """Error reply, then close: the rest of the byte stream cannot be trusted."""
        self.closing = True
        if self.worker is None:
            self.transport.write(data)  # type: ignore[union-attr]
            self.transport.close()  # type: ignore[union-attr]
        else:
            self.queue.append((None, "", data))
            self.queue.append((None, "", b""))

    def _start_worker(self) -> None:
        if self.worker is None:
            self.worker = self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        transport = self.transport
        assert transport is not None
        try:
            while self.queue:
                lookup_map, key, canned = self.queue[0]
                if canned is not None:
                    if canned == b"":
                        transport.close()
                        return
                    data = canned
                else:
                    assert lookup_map is not None
                    try:
                        decision = await lookup_map.lookup(key)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("lookup in %s failed", lookup_map.name)
                        decision = Decision.temp("lookup failed")
                    data = self.format_reply(decision)
                if transport.is_closing():
                    return
                self.queue.popleft()
                transport.write(data)
                if len(self.queue) < MAX_QUEUED // 2:
                    self._resume("queue")
        finally:
            self.worker = None
            self.last_request = time.monotonic()

    @property
    def idle(self) -> bool:
        """No request being worked on or queued: closing it loses nothing."""
        return self.worker is None and not self.queue and not self.closing

    # --- idle timeout -----------------------------------------------------------------
    def _arm_idle_timer(self, delay: float) -> None:
        self.idle_timer = self.loop.call_later(max(delay, 0.01), self._idle_check)

    def _idle_check(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        idle_for = time.monotonic() - self.last_request
        if self.worker is None and idle_for >= self.server.idle_timeout:
            log.debug("closing idle connection")
            self.transport.close()
            return
        self._arm_idle_timer(self.server.idle_timeout - idle_for)


class SocketmapConnection(LookupConnection):
    format_reply = staticmethod(socketmap.format_reply)

    def __init__(self, server: LookupServer) -> None:
        super().__init__(server)
        self.decoder = NetstringDecoder(socketmap.MAX_REQUEST)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        decoder = self.decoder
        decoder.feed(data)
        maps = self.server.maps
        while True:
            try:
                frame = decoder.next_frame()
            except NetstringTooLong:
                self.fail(socketmap.error_reply("request too long"))
                return
            except NetstringError as exc:
                self.fail(socketmap.error_reply(f"malformed request: {exc}"))
                return
            if frame is None:
                return
            try:
                name, key = socketmap.parse_request(frame)
            except ValueError:
                # The framing is intact, so only this request is bad.
                self.reply(socketmap.error_reply("request is not '<map> <key>'"))
                continue
            lookup_map = maps.get(name)
            if lookup_map is None:
                self.reply(socketmap.error_reply(f"no map named {name!r}"))
            else:
                self.submit(lookup_map, key)


class TcpTableConnection(LookupConnection):
    format_reply = staticmethod(tcp_table.format_reply)

    def __init__(self, server: LookupServer, lookup_map: LookupMap) -> None:
        super().__init__(server)
        self.map = lookup_map
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        buf = self.buffer
        buf += data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(buf[start:nl])
            start = nl + 1
            if len(line) > tcp_table.MAX_REQUEST:
                self.fail(tcp_table.error_reply("request too long"))
                return
            try:
                key = tcp_table.parse_request(line)
            except ValueError as exc:
                self.reply(tcp_table.error_reply(str(exc)))
                continue
            self.submit(self.map, key)
        if start:
            del buf[:start]
        if len(buf) > tcp_table.MAX_REQUEST:
            self.fail(tcp_table.error_reply("request too long"))

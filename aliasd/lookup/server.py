"""asyncio server for Postfix lookup tables: socketmap (every registered map, routed by
name) and tcp_table (one map per listener), on ``host:port`` or ``unix:/path``.

Per connection, requests are answered strictly in order, also when the client pipelines
them; lookups a map can answer from memory are answered inline (no task per request),
others run in a per-connection worker while other connections keep being served.
Framing errors get an error reply and a close; idle clients (no complete request within
``idle_timeout``) are closed; a client that does not read its replies stops being read.
At most ``max_connections`` are open at once: past the cap the longest-idle connection is
closed to make room (Postfix reconnects on its next lookup), or, when none is idle, the new
one is closed at once; running out of file descriptors is logged, never silent."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import socket
import stat
import time
from collections import deque
from collections.abc import Callable, Mapping

from aliasd.core.decision import Decision
from aliasd.listen import ListenSpec
from aliasd.lookup import socketmap, tcp_table
from aliasd.lookup.maps import LookupMap
from aliasd.lookup.netstring import NetstringDecoder, NetstringError, NetstringTooLong

log = logging.getLogger("aliasd.lookup")

Formatter = Callable[[Decision], bytes]

# Requests queued behind a slow lookup before we stop reading from that client; bounds
# the memory one pipelining client can take.
MAX_QUEUED = 1000
# Postfix's socketmap client closes a connection after 10 s idle; closing ours a little
# later leaves that to Postfix normally, while idle sockets cannot pile up for a minute.
DEFAULT_IDLE_TIMEOUT = 15.0
# Descriptors kept back from the connection cap: listeners, database connections, logs.
RESERVED_DESCRIPTORS = 64
# One log line per this many seconds about the cap or descriptor exhaustion.
LOG_INTERVAL = 60.0
DESCRIPTOR_CHECK_INTERVAL = 2.0


class _Connection(asyncio.Protocol):
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
        self.last_request = self.loop.time()
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
        self.last_request = self.loop.time()
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
        self.last_request = self.loop.time()
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
            self.last_request = self.loop.time()

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
        idle_for = self.loop.time() - self.last_request
        if self.worker is None and idle_for >= self.server.idle_timeout:
            log.debug("closing idle connection")
            self.transport.close()
            return
        self._arm_idle_timer(self.server.idle_timeout - idle_for)


class SocketmapConnection(_Connection):
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


class TcpTableConnection(_Connection):
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


class LookupServer:
    """Serves ``maps`` on any number of socketmap and tcp_table listeners."""

    def __init__(
        self,
        maps: Mapping[str, LookupMap],
        *,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_connections: int = 0,
    ) -> None:
        self.maps = dict(maps)
        self.idle_timeout = idle_timeout
        allowed = default_max_connections()
        if max_connections > allowed:
            log.warning(
                "lookup_max_connections %d is more than the descriptor limit allows; "
                "using %d (raise LimitNOFILE to allow more)", max_connections, allowed,
            )
        self.max_connections = min(max_connections, allowed) if max_connections else allowed
        self.servers: list[asyncio.Server] = []
        self.connections: set[_Connection] = set()
        self._unix_paths: list[str] = []
        self.evicted = 0  # idle connections closed to make room, since start
        self.refused = 0  # new connections closed at once, since start
        self._cap_log = _RateLimitedLog(LOG_INTERVAL)
        self._watchdog: asyncio.Task | None = None

    def admit(self, conn: _Connection) -> bool:
        """Room for ``conn``: under the cap, or after closing the longest-idle connection."""
        if len(self.connections) < self.max_connections:
            return True
        idle = [c for c in self.connections if c.idle and c.transport is not None]
        if idle:
            oldest = min(idle, key=lambda c: c.last_request)
            self.connections.discard(oldest)
            oldest.closing = True
            oldest.transport.close()  # type: ignore[union-attr]
            self.evicted += 1
            self._cap_log.warning(
                "connection cap of %d reached: closed the longest-idle connection "
                "(%d closed so, %d new ones refused since start; raise lookup_max_connections "
                "and the descriptor limit if this repeats)",
                self.max_connections, self.evicted, self.refused,
            )
            return True
        self.refused += 1
        self._cap_log.warning(
            "connection cap of %d reached and every connection is busy: closed a new "
            "connection (%d refused so since start; Postfix retries)",
            self.max_connections, self.refused,
        )
        return False

    def install_loop_handler(self, loop: asyncio.AbstractEventLoop) -> None:
        """Log running out of descriptors (asyncio and uvloop report it to the loop's
        exception handler; without this it can pass unnoticed)."""
        previous = loop.get_exception_handler()
        descriptor_log = _RateLimitedLog(LOG_INTERVAL)

        def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in _DESCRIPTOR_ERRORS:
                descriptor_log.error(
                    "out of file descriptors (%s) with %d connections open: new "
                    "connections wait; lower lookup_max_connections (now %d) or raise "
                    "the limit (LimitNOFILE)",
                    os.strerror(exc.errno), len(self.connections), self.max_connections,
                )
                return
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
        # uvloop (libuv) absorbs EMFILE on accept without telling the loop: watch the
        # descriptor count instead.
        self._watchdog = loop.create_task(self._watch_descriptors(descriptor_log))

    async def _watch_descriptors(self, descriptor_log: _RateLimitedLog) -> None:
        while True:
            await asyncio.sleep(DESCRIPTOR_CHECK_INTERVAL)
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            try:
                in_use = len(os.listdir("/proc/self/fd"))
            except OSError as exc:
                if exc.errno not in _DESCRIPTOR_ERRORS:
                    return  # no /proc: the loop handler is all there is
                in_use = soft  # even reading the list needs a descriptor
            if in_use >= soft - 2:
                descriptor_log.error(
                    "out of file descriptors (%d of %d in use) with %d connections open: "
                    "new connections are dropped; raise the limit (LimitNOFILE)",
                    in_use, soft, len(self.connections),
                )

    async def start_maps(self) -> None:
        for lookup_map in self.maps.values():
            start = getattr(lookup_map, "start", None)
            if start is not None:
                await start()

    async def listen_socketmap(self, spec: str | ListenSpec) -> ListenSpec:
        return await self._listen(spec, lambda: SocketmapConnection(self))

    async def listen_tcp(self, spec: str | ListenSpec, map_name: str = "virtual") -> ListenSpec:
        lookup_map = self.maps.get(map_name)
        if lookup_map is None:
            raise ValueError(f"no map named {map_name!r} (have: {', '.join(self.maps)})")
        return await self._listen(spec, lambda: TcpTableConnection(self, lookup_map))

    async def _listen(self, spec: str | ListenSpec, factory) -> ListenSpec:
        spec = ListenSpec.parse(spec) if isinstance(spec, str) else spec
        loop = asyncio.get_running_loop()
        if spec.path:
            _remove_stale_socket(spec.path)
            server = await loop.create_unix_server(factory, spec.path, backlog=512)
            # Postfix processes run as another user; the answers are what RCPT probing
            # reveals anyway, so the socket is open to local users.
            os.chmod(spec.path, 0o666)
            self._unix_paths.append(spec.path)
            bound = spec
        else:
            server = await loop.create_server(
                factory, spec.host, spec.port, backlog=512, reuse_address=True
            )
            host, port = server.sockets[0].getsockname()[:2]
            bound = ListenSpec(host=host, port=port)
        self.servers.append(server)
        log.info("listening on %s", bound)
        return bound

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        for lookup_map in self.maps.values():
            close = getattr(lookup_map, "close", None)
            if close is not None:
                await close()


_DESCRIPTOR_ERRORS = {errno.EMFILE, errno.ENFILE}


def default_max_connections() -> int:
    """What the process's descriptor limit allows, less the ones kept back."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, soft - RESERVED_DESCRIPTORS)


def raise_descriptor_limit() -> int:
    """Raise the soft descriptor limit to the hard one (what daemons do at start);
    returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class _RateLimitedLog:
    """At most one log line per ``interval`` seconds; the rest are counted in the next."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = -interval
        self.suppressed = 0

    def _emit(self, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        if self.suppressed:
            message += " (%d similar events not logged)"
            args = (*args, self.suppressed)
        self.last, self.suppressed = now, 0
        log.log(level, message, *args)

    def warning(self, message: str, *args: object) -> None:
        self._emit(logging.WARNING, message, *args)

    def error(self, message: str, *args: object) -> None:
        self._emit(logging.ERROR, message, *args)


def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ValueError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left over from a crashed run
    else:
        raise ValueError(f"{path}: another process is already listening there")
    finally:
        probe.close()

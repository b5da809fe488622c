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
import logging
import os
import resource
import socket
import stat
from collections.abc import Mapping

from aliasd.listen import ListenSpec
from aliasd.lookup.connections import LookupConnection, SocketmapConnection, TcpTableConnection
from aliasd.lookup.descriptors import (
    DESCRIPTOR_ERRORS,
    RateLimitedLog,
    default_max_connections,
)
from aliasd.lookup.maps import LookupMap

log = logging.getLogger("aliasd.lookup")


# Postfix's socketmap client closes a connection after 10 s idle; closing ours a little
# later leaves that to Postfix normally, while idle sockets cannot pile up for a minute.
DEFAULT_IDLE_TIMEOUT = 15.0
# One log line per this many seconds about the cap or descriptor exhaustion.
LOG_INTERVAL = 60.0
DESCRIPTOR_CHECK_INTERVAL = 2.0


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
        self.connections: set[LookupConnection] = set()
        self._unix_paths: list[str] = []
        self.evicted = 0  # idle connections closed to make room, since start
        self.refused = 0  # new connections closed at once, since start
        self._cap_log = RateLimitedLog(LOG_INTERVAL)
        self._watchdog: asyncio.Task | None = None

    def admit(self, conn: LookupConnection) -> bool:
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
        descriptor_log = RateLimitedLog(LOG_INTERVAL)

        def handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno in DESCRIPTOR_ERRORS:
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

    async def _watch_descriptors(self, descriptor_log: RateLimitedLog) -> None:
        while True:
            await asyncio.sleep(DESCRIPTOR_CHECK_INTERVAL)
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            try:
                in_use = len(os.listdir("/proc/self/fd"))
            except OSError as exc:
                if exc.errno not in DESCRIPTOR_ERRORS:
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

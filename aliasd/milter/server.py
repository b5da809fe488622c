"""Running the milter: listen on ``HOST:PORT`` or ``unix:/path``, one asyncio event loop
per process (:mod:`aliasd.milter.connection` speaks the protocol), and with several
workers a supervisor that forks them onto one shared socket."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time

from aliasd.config import Settings
from aliasd.core.addresses import load_public_suffixes
from aliasd.db import Database
from aliasd.listen import ListenError, ListenSpec
from aliasd.milter.adapter import AliasdMilter
from aliasd.milter.connection import MilterConnection
from aliasd.milter.processing import MailPath

log = logging.getLogger(__name__)

BACKLOG = 128
# Threads per process for the end of messages (each mostly waits on its scan, the
# database or DNS); more concurrent messages than this wait their turn.
EOM_THREADS = 64
# How long a stopping worker lets messages in flight finish before it closes.
STOP_GRACE = 30.0


def open_listener(where: ListenSpec) -> socket.socket:
    """The listening socket: TCP with TCP_NODELAY inherited by accepted sockets, or a
    unix socket Postfix's smtpd (user postfix) may connect to."""
    if where.path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(where.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(where.path)
        os.chmod(where.path, 0o666)
    else:
        family = socket.AF_INET6 if where.is_ipv6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((where.host, where.port))
    sock.listen(BACKLOG)
    # Shared by the workers: all wake for a connection, one accepts it, the others
    # must get EAGAIN rather than block.
    sock.setblocking(False)
    return sock


def worker_count(settings: Settings, workers: int | None = None) -> int:
    """How many milter processes: the argument, else the setting; 0 means one per CPU."""
    wanted = settings.milter_workers if workers is None else workers
    if wanted <= 0:
        wanted = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
    return max(1, wanted)


def serve(settings: Settings, database: Database, listen: str | None = None,
          mailpath: MailPath | None = None, workers: int | None = None) -> None:
    """Serve until SIGTERM/SIGINT.

    With one worker, this process serves. With more, this process opens the socket,
    loads the scanner, and forks the workers, which all accept on the inherited socket:
    the GIL allows one process one core, and most of a message's work is Python. The
    scanner's tables are built before the fork, so the workers share those pages."""
    where = ListenSpec.parse(listen or settings.milter_listen)
    count = worker_count(settings, workers)
    mailpath = mailpath or MailPath(settings, database, background_events=True)
    try:
        listener = open_listener(where)
    except OSError as exc:  # in use, no such directory, no permission
        raise ListenError(
            f"cannot listen on {listen or settings.milter_listen}: {exc.strerror or exc}"
        ) from exc
    try:  # built now, not at the first message (and before a fork, to be shared)
        mailpath.scanner()
    except Exception as exc:  # noqa: BLE001 - each message says so again, and passes
        log.warning("scanner not ready: %s", exc)
    load_public_suffixes()  # DMARC and attribution read it for every message
    # The scanner's tables are some 100,000 objects that live as long as the process:
    # kept out of the collector, a full collection no longer walks them (it took 120-230
    # ms, stalling whichever message was in flight), and the workers no longer dirty the
    # pages they share with the supervisor by collecting them.
    gc.collect()
    gc.freeze()
    log.info("aliasd milter listening on %s (%d worker%s)", where, count,
             "" if count == 1 else "s")
    try:
        if count == 1:
            try:
                run_worker(listener, mailpath)
            finally:
                mailpath.close()
            return
        _supervise(count, listener, mailpath, database)
    finally:
        listener.close()
        if where.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(where.path)


def run_worker(listener: socket.socket, mailpath: MailPath) -> None:
    """Serve connections on ``listener`` in this process until SIGTERM/SIGINT, then let
    the messages in flight finish (up to STOP_GRACE)."""
    factory = _loop_factory()
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_serve_connections(listener, mailpath))


async def _serve_connections(listener: socket.socket, mailpath: MailPath) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=EOM_THREADS, thread_name_prefix="aliasd-milter")
    active: set[MilterConnection] = set()

    def connection() -> MilterConnection:
        return MilterConnection(lambda: AliasdMilter(mailpath), executor, active)

    if listener.family == socket.AF_UNIX:
        server = await loop.create_unix_server(connection, sock=listener)
    else:
        server = await loop.create_server(connection, sock=listener)
    try:
        await stop.wait()
    finally:
        server.close()
        deadline = loop.time() + STOP_GRACE
        while any(c.busy is not None for c in active) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(active):
            if conn.transport is not None:
                conn.transport.close()
        executor.shutdown(wait=False, cancel_futures=True)


def _loop_factory():
    """uvloop when installed (as lookupd uses it), else asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _end_with_parent(parent: int) -> None:
    """SIGTERM this worker when the supervisor dies, even by SIGKILL: a worker left
    behind would go on answering Postfix from an unsupervised process (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _child(listener: socket.socket, mailpath: MailPath, parent: int) -> None:
    """A worker: serve on the inherited socket until SIGTERM, write the queued events."""
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _end_with_parent(parent)
        mailpath.after_fork()
        run_worker(listener, mailpath)
    except BaseException:  # noqa: BLE001 - the parent starts another
        log.exception("milter worker failed")
        code = 1
    finally:
        try:
            mailpath.close()
        finally:
            logging.shutdown()
            os._exit(code)  # never run the parent's cleanup (atexit, the unix socket)


def _supervise(count: int, listener: socket.socket, mailpath: MailPath,
               database: Database) -> None:
    """Fork ``count`` workers, start a new one when one dies, and stop them all (each
    flushing its events) on SIGTERM/SIGINT."""
    stopping = threading.Event()
    children: dict[int, float] = {}  # pid -> start time

    def spawn() -> None:
        database.dispose()  # a connection must never be shared across processes
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _child(listener, mailpath, parent)
        children[pid] = time.monotonic()

    def on_signal(signum, _frame) -> None:
        stopping.set()
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for _ in range(count):
        spawn()
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        started = children.pop(pid, None)
        if started is None or stopping.is_set():
            continue
        log.warning("milter worker %d ended (%s); starting another", pid,
                    _status_text(status))
        if time.monotonic() - started < 1.0:
            time.sleep(1.0)  # a worker dying at once must not spin the CPU
        if not stopping.is_set():
            spawn()


def _status_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"

"""Running the milter: listen on ``HOST:PORT`` or ``unix:/path`` through libmilter."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import Milter
import milter as libmilter

from aliasd.config import Settings
from aliasd.db import Database
from aliasd.listen import ListenSpec
from aliasd.milter.adapter import AliasdMilter
from aliasd.milter.processing import MailPath

log = logging.getLogger(__name__)

MILTER_NAME = "aliasd"


def _listeners() -> Iterator[tuple[int, socket.socket]]:
    """This process's listening stream sockets (libmilter opens its own and keeps no
    handle for us): each as its fd and a duplicate, closed after the caller's turn."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with sock:
            try:
                listening = sock.type == socket.SOCK_STREAM and sock.getsockopt(
                    socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            except OSError:
                continue
            if listening:
                yield fd, sock


def _bound_to(sock: socket.socket, where: ListenSpec) -> bool:
    try:
        bound = sock.getsockname()
    except OSError:
        return False
    if where.path:
        return sock.family == socket.AF_UNIX and bound == where.path
    return sock.family in (socket.AF_INET, socket.AF_INET6) and bound[1] == where.port


def set_nodelay_on_listener(port: int) -> bool:
    """Set TCP_NODELAY on this process's listening socket for ``port``.

    libmilter creates and accepts the sockets itself and never disables Nagle's
    algorithm; several small replies at end of message then wait for Postfix's
    delayed ACK (~40 ms each). Linux copies TCP_NODELAY from a listening socket to
    every accepted one, so setting it once on the listener covers all connections."""
    done = False
    for _fd, sock in _listeners():
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.getsockname()[1] == port:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                done = True
    return done


def set_listener_nonblocking(where: ListenSpec) -> bool:
    """Make this process's listening socket non-blocking, for workers sharing it.

    libmilter waits in select() and then accept()s; with several processes on one
    socket all wake for a connection, one gets it, and a blocking accept() would hold
    the others until the next connection (deaf to SIGTERM meanwhile). Non-blocking, the
    losers get EAGAIN, which libmilter skips. Accepted sockets do not inherit the flag."""
    for fd, sock in _listeners():
        if _bound_to(sock, where):
            os.set_blocking(fd, False)
            return True
    return False


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

    With one worker, this process serves (libmilter handles the signals). With more,
    this process opens the socket, loads the scanner, and forks the workers, which all
    accept on the inherited socket (libmilter keeps a socket already open): the GIL
    allows one process one core, and most of a message's work is Python. The scanner's
    tables are built before the fork, so the workers share those pages."""
    where = ListenSpec.parse(listen or settings.milter_listen)
    spec = where.libmilter()
    count = worker_count(settings, workers)
    mailpath = mailpath or MailPath(settings, database, background_events=True)
    AliasdMilter.mailpath = mailpath
    _register(spec)
    if where.path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(where.path)
    libmilter.opensocket(True)
    if where.path:
        # Postfix's smtpd runs as user postfix and must be able to connect.
        os.chmod(where.path, 0o666)
    elif not set_nodelay_on_listener(where.port):
        log.warning("could not set TCP_NODELAY on the milter socket (port %s)", where.port)
    try:  # built now, not at the first message (and before a fork, to be shared)
        mailpath.scanner()
    except Exception as exc:  # noqa: BLE001 - each message says so again, and passes
        log.warning("scanner not ready: %s", exc)
    # The scanner's tables are some 100,000 objects that live as long as the process:
    # kept out of the collector, a full collection no longer walks them (it took 120-230
    # ms, stalling whichever message was in flight), and the workers no longer dirty the
    # pages they share with the supervisor by collecting them.
    gc.collect()
    gc.freeze()
    log.info("aliasd milter listening on %s (%d worker%s)", spec, count,
             "" if count == 1 else "s")
    if count == 1:
        try:
            libmilter.main()
        finally:
            mailpath.close()
        return
    if not set_listener_nonblocking(where):
        log.warning("could not make the milter socket non-blocking; workers may stall")
    _supervise(count, mailpath, database, where.path)


def _register(spec: str) -> None:
    Milter.factory = AliasdMilter
    # An exception escaping a callback continues the message: never lose mail.
    libmilter.set_exception_policy(libmilter.CONTINUE)
    libmilter.set_flags(libmilter.ADDHDRS | libmilter.CHGHDRS | libmilter.DELRCPT
                      | libmilter.ADDRCPT | libmilter.CHGFROM | libmilter.QUARANTINE)
    libmilter.set_connect_callback(Milter.connect_callback)
    libmilter.set_helo_callback(lambda ctx, host: ctx.getpriv().hello(host))
    libmilter.set_envfrom_callback(lambda ctx, *b: ctx.getpriv().envfrom_bytes(*b))
    libmilter.set_envrcpt_callback(lambda ctx, *b: ctx.getpriv().envrcpt_bytes(*b))
    libmilter.set_header_callback(lambda ctx, f, v: ctx.getpriv().header_bytes(f, v))
    libmilter.set_eoh_callback(lambda ctx: ctx.getpriv().eoh())
    libmilter.set_body_callback(lambda ctx, chunk: ctx.getpriv().body(chunk))
    libmilter.set_eom_callback(lambda ctx: ctx.getpriv().eom())
    libmilter.set_abort_callback(lambda ctx: ctx.getpriv().abort())
    libmilter.set_close_callback(Milter.close_callback)
    libmilter.setconn(spec)
    libmilter.settimeout(600)
    libmilter.setbacklog(128)
    libmilter.register(
        MILTER_NAME,
        data=lambda ctx: ctx.getpriv().data(),
        unknown=lambda ctx, cmd: ctx.getpriv().unknown(cmd),
        negotiate=Milter.negotiate_callback,
    )


def _end_with_parent(parent: int) -> None:
    """SIGTERM this worker when the supervisor dies, even by SIGKILL: a worker left
    behind would go on answering Postfix from an unsupervised process (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _child(mailpath: MailPath, parent: int) -> None:
    """A worker: serve on the inherited socket until SIGTERM, write the queued events."""
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _end_with_parent(parent)
        mailpath.after_fork()
        libmilter.main()  # libmilter's own thread takes SIGTERM/SIGINT from here on
    except BaseException:  # noqa: BLE001 - the parent starts another
        log.exception("milter worker failed")
        code = 1
    finally:
        try:
            mailpath.close()
        finally:
            logging.shutdown()
            os._exit(code)  # never run the parent's cleanup (atexit, the unix socket)


def _supervise(count: int, mailpath: MailPath, database: Database, path: str | None) -> None:
    """Fork ``count`` workers, start a new one when one dies, and stop them all (each
    flushing its events) on SIGTERM/SIGINT."""
    stopping = threading.Event()
    children: dict[int, float] = {}  # pid -> start time

    def spawn() -> None:
        database.dispose()  # a connection must never be shared across processes
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            _child(mailpath, parent)
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
    try:
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
    finally:
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _status_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"

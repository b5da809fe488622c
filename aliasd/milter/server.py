"""Running the milter: listen on ``HOST:PORT`` or ``unix:/path`` through libmilter."""

from __future__ import annotations

import contextlib
import logging
import os
import socket

import Milter
import milter as libmilter

from aliasd.config import Settings
from aliasd.db import Database
from aliasd.listen import ListenSpec
from aliasd.milter.adapter import AliasdMilter
from aliasd.milter.processing import MailPath

log = logging.getLogger(__name__)

MILTER_NAME = "aliasd"


def set_nodelay_on_listener(port: int) -> bool:
    """Set TCP_NODELAY on this process's listening socket for ``port``.

    libmilter creates and accepts the sockets itself and never disables Nagle's
    algorithm; several small replies at end of message then wait for Postfix's
    delayed ACK (~40 ms each). Linux copies TCP_NODELAY from a listening socket to
    every accepted one, so setting it once on the listener covers all connections."""
    done = False
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        with sock:
            try:
                if (
                    sock.family in (socket.AF_INET, socket.AF_INET6)
                    and sock.type == socket.SOCK_STREAM
                    and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    and sock.getsockname()[1] == port
                ):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    done = True
            except OSError:
                continue
    return done


def serve(settings: Settings, database: Database, listen: str | None = None,
          mailpath: MailPath | None = None) -> None:
    """Serve until SIGTERM/SIGINT (libmilter handles those signals)."""
    where = ListenSpec.parse(listen or settings.milter_listen)
    spec = where.libmilter()
    mailpath = mailpath or MailPath(settings, database)
    AliasdMilter.mailpath = mailpath
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
    if where.path:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(where.path)
    libmilter.opensocket(True)
    if where.path:
        # Postfix's smtpd runs as user postfix and must be able to connect.
        os.chmod(where.path, 0o666)
    elif not set_nodelay_on_listener(where.port):
        log.warning("could not set TCP_NODELAY on the milter socket (port %s)", where.port)
    log.info("aliasd milter listening on %s", spec)
    try:
        libmilter.main()
    finally:
        mailpath.close()

"""One milter connection from Postfix, on asyncio: frames in, the adapter's steps called
in order, the end of each message run in a worker thread (it may wait on the database
and DNS), and its edits and decision sent back in one write.

Every step but DATA and end of message is negotiated "no reply", so a message costs two
round trips. Frames are handled in the event loop's thread; only end of message leaves
it, once per message.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import socket
import time
from collections.abc import Callable

from aliasd.milter import protocol
from aliasd.milter.adapter import AliasdMilter
from aliasd.milter.edits import ACCEPT, MessageEdits
from aliasd.milter.protocol import ProtocolError

log = logging.getLogger(__name__)

# Edits the adapter may make (asked for; Postfix grants what it offers).
WANTED_ACTIONS = (protocol.SMFIF_ADDHDRS | protocol.SMFIF_CHGHDRS | protocol.SMFIF_ADDRCPT
                  | protocol.SMFIF_DELRCPT | protocol.SMFIF_CHGFROM
                  | protocol.SMFIF_QUARANTINE
                  | protocol.SMFIF_CHGBODY)  # only for DSNs (aliasd.core.bounce_privacy)
# Steps sent without waiting for us. DATA is answered on purpose: unanswered, Postfix
# sends the DATA-stage macros and the first header as separate small packets, the second
# waits behind Nagle's algorithm for our delayed ACK, and every message stalls ~40 ms.
WANTED_PROTOCOL = (protocol.SMFIP_NR_CONN | protocol.SMFIP_NR_HELO | protocol.SMFIP_NR_MAIL
                   | protocol.SMFIP_NR_RCPT | protocol.SMFIP_NR_HDR | protocol.SMFIP_NR_EOH
                   | protocol.SMFIP_NR_BODY | protocol.SMFIP_NOUNKNOWN)
# Asked for at connect: Postfix's default list (milter_connect_macros) and the outcome of
# its reverse-DNS lookup of the client (OK, FAIL, FORGED or TEMP), so that a lookup that
# failed for now is not read as "no reverse-DNS name".
CONNECT_MACROS = "j {daemon_name} {daemon_addr} v _ {client_resolve}"
# Macro stages in the order Postfix sends them; a later stage's value wins.
_STAGES = (protocol.SMFIC_CONNECT, protocol.SMFIC_HELO, protocol.SMFIC_MAIL,
           protocol.SMFIC_RCPT, protocol.SMFIC_DATA, protocol.SMFIC_EOH,
           protocol.SMFIC_BODYEOB)
_CONTINUE = protocol.frame(protocol.SMFIR_CONTINUE)
IDLE_TIMEOUT = 600.0  # seconds without a frame before a connection is dropped


class MilterConnection(asyncio.Protocol):
    def __init__(self, make_session: Callable[[], AliasdMilter],
                 executor: concurrent.futures.Executor,
                 active: set[MilterConnection] | None = None,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.make_session = make_session
        self.executor = executor
        self.active = active if active is not None else set()
        self.idle_timeout = idle_timeout
        self.transport: asyncio.Transport | None = None
        self.reader = protocol.FrameReader()
        self.session = make_session()
        self.frames: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self.busy: asyncio.Future | None = None  # the message being processed
        self.actions = 0
        # Commands answered "continue" (all of them until negotiation says otherwise).
        self.answered = frozenset(protocol.NO_REPLY_FLAG)
        self.macros: dict[bytes, dict[str, str]] = {}
        self.peer = "?"
        self._idle: asyncio.TimerHandle | None = None
        self._heard_at = 0.0  # time.monotonic() of the last bytes from Postfix

    # --- asyncio callbacks ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = str(transport.get_extra_info("peername") or "unix socket")
        self.active.add(self)
        self._heard_at = time.monotonic()
        self._check_idle_in(self.idle_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.active.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        self.frames.clear()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        # Only noted: one timer per connection checks it (re-arming a timer for every
        # read cost a tenth of the protocol's time).
        self._heard_at = time.monotonic()
        try:
            self.frames.extend(self.reader.feed(data))
        except ProtocolError as exc:
            self._drop(f"malformed frame: {exc}")
            return
        self._handle_frames()

    # --- frames -----------------------------------------------------------------------
    def _handle_frames(self) -> None:
        while self.frames and self.busy is None and self.transport is not None:
            command, data = self.frames.popleft()
            try:
                self._handle(command, data)
            except ProtocolError as exc:
                self._drop(f"malformed {command!r} command: {exc}")
                return
        if self.transport is not None:
            # Postfix waits for our answer at end of message; nothing should arrive
            # meanwhile, and a client that sends anyway is not read until then.
            if self.busy is not None:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _handle(self, command: bytes, data: bytes) -> None:
        session = self.session
        if command == protocol.SMFIC_HEADER:  # the most frequent, first
            name, sep, value = data.partition(b"\0")
            if not sep:
                raise ProtocolError("header without a value")
            session.header(name, value[:-1] if value[-1:] == b"\0" else value)
        elif command == protocol.SMFIC_MACRO:
            stage, values = protocol.parse_macros(data)
            if stage == protocol.SMFIC_MAIL:  # a new message: its macros start afresh
                for later in _STAGES[_STAGES.index(protocol.SMFIC_MAIL):]:
                    self.macros.pop(later, None)
            self.macros[stage] = values
            return
        elif command == protocol.SMFIC_BODY:
            session.body(data)
        elif command == protocol.SMFIC_BODYEOB:
            if data:
                session.body(data)
            self._end_of_message()
            return
        elif command == protocol.SMFIC_RCPT:
            session.envrcpt(protocol.parse_address_command(data)[0])
        elif command == protocol.SMFIC_MAIL:
            session.envfrom(protocol.parse_address_command(data)[0],
                            self.macro("{auth_authen}"))
        elif command == protocol.SMFIC_EOH:
            session.eoh()
        elif command == protocol.SMFIC_DATA:
            pass
        elif command == protocol.SMFIC_ABORT:
            session.abort()
            return  # never answered
        elif command == protocol.SMFIC_CONNECT:
            connect = protocol.parse_connect(data)
            session.connect(connect.address if connect.family in ("4", "6") else None,
                            connect.hostname, self.macro("{client_resolve}"),
                            port=connect.port)
        elif command == protocol.SMFIC_HELO:
            helo = protocol.strings(data)
            session.hello(helo[0].decode("utf-8", "replace") if helo else "")
        elif command == protocol.SMFIC_OPTNEG:
            self._negotiate(protocol.parse_negotiation(data))
            return
        elif command == protocol.SMFIC_QUIT:
            self.transport.close()
            return
        elif command == protocol.SMFIC_QUIT_NC:  # the next SMTP session on this connection
            self.session = self.make_session()
            self.macros.clear()
            return
        elif command != protocol.SMFIC_UNKNOWN:
            raise ProtocolError("unknown command")
        if command in self.answered:
            self.transport.write(_CONTINUE)

    def _negotiate(self, offer: protocol.Negotiation) -> None:
        if offer.version < 2:
            raise ProtocolError(f"MTA speaks milter protocol version {offer.version}")
        version = min(offer.version, protocol.VERSION)
        self.actions = WANTED_ACTIONS & offer.actions
        wanted = WANTED_PROTOCOL & offer.protocol
        self.answered = frozenset(command for command, flag in protocol.NO_REPLY_FLAG.items()
                                  if not wanted & flag)
        macros = None
        if version >= 6 and offer.actions & protocol.SMFIF_SETSYMLIST:
            macros = {protocol.SMFIM_CONNECT: CONNECT_MACROS}
            self.actions |= protocol.SMFIF_SETSYMLIST
        self.transport.write(protocol.negotiation_reply(version, self.actions, wanted, macros))

    def macro(self, name: str) -> str | None:
        for stage in reversed(_STAGES):
            value = self.macros.get(stage, {}).get(name)
            if value is not None:
                return value
        return None

    # --- end of message ---------------------------------------------------------------
    def _end_of_message(self) -> None:
        edits = MessageEdits(self.actions)
        session = self.session
        queue_id = self.macro("i")
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self.executor, session.eom, queue_id, edits)
        except RuntimeError:  # the executor is shut down: we are stopping
            self._answer(edits.encode(ACCEPT))
            return
        self.busy = future
        future.add_done_callback(lambda done: self._finished(done, edits))

    def _finished(self, done: asyncio.Future, edits: MessageEdits) -> None:
        self.busy = None
        if done.cancelled() or done.exception() is not None:
            # eom catches its own faults; this is the executor failing: never lose mail.
            log.error("end of message failed outside the mail path: %r",
                      None if done.cancelled() else done.exception())
            edits.discard_edits()
            self._answer(edits.encode(ACCEPT))
        else:
            self._answer(edits.encode(done.result()))
        self._handle_frames()

    def _answer(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # --- endings ------------------------------------------------------------------------
    def _check_idle_in(self, delay: float) -> None:
        self._idle = asyncio.get_running_loop().call_later(delay, self._idle_check)

    def _idle_check(self) -> None:
        if self.transport is None:
            return
        quiet = time.monotonic() - self._heard_at
        if self.busy is None and quiet >= self.idle_timeout:
            log.info("milter connection from %s idle for %gs; closing", self.peer,
                     self.idle_timeout)
            self.transport.close()
            return
        # a message being processed is never cut off: look again a full timeout later
        self._check_idle_in(self.idle_timeout if self.busy is not None
                            else self.idle_timeout - quiet)

    def _drop(self, reason: str) -> None:
        log.warning("milter connection from %s: %s; closing it", self.peer, reason)
        if self.transport is not None:
            self.transport.abort()
        self.frames.clear()

"""A milter connection Postfix keeps open but says nothing on is closed after the idle
timeout; one it keeps talking on stays open however long it lasts, and a message being
processed is never cut off. A real asyncio server on 127.0.0.1 and a client socket."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
import time

import pytest

from aliasd.milter import protocol
from aliasd.milter.connection import MilterConnection
from aliasd.milter.edits import ACCEPT

IDLE = 1.0  # generous: the test machine may be busy with other tests
# Macros only: read and kept, never answered, and no message step is run.
MACRO = protocol.frame(protocol.SMFIC_MACRO, protocol.SMFIC_CONNECT + b"j\0mx.example\0")


class Session:
    """The adapter's end of message, slow on purpose (nothing else is called here)."""

    def eom(self, queue_id, edits):
        time.sleep(IDLE * 2.5)
        return ACCEPT


@pytest.fixture
def server():
    loop = asyncio.new_event_loop()
    executor = concurrent.futures.ThreadPoolExecutor(2)
    listener = socket.create_server(("127.0.0.1", 0))
    started = threading.Event()

    async def serve():
        await loop.create_server(
            lambda: MilterConnection(Session, executor, idle_timeout=IDLE), sock=listener)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    assert started.wait(5)
    yield listener.getsockname()
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    executor.shutdown(wait=False)


def closed_within(client: socket.socket, seconds: float) -> bool:
    client.settimeout(seconds)
    try:
        return client.recv(100) == b""
    except TimeoutError:
        return False


def test_a_silent_connection_is_closed_after_the_idle_timeout(server):
    with socket.create_connection(server) as client:
        assert not closed_within(client, IDLE * 0.5)
        assert closed_within(client, IDLE * 2)


def test_a_connection_postfix_keeps_talking_on_stays_open(server):
    with socket.create_connection(server) as client:
        deadline = time.monotonic() + IDLE * 3
        while time.monotonic() < deadline:
            client.sendall(MACRO)
            assert not closed_within(client, IDLE * 0.4)
        assert closed_within(client, IDLE * 2)  # and once it falls silent, it is closed


def test_a_message_being_processed_is_not_cut_off(server):
    with socket.create_connection(server) as client:
        client.sendall(protocol.frame(protocol.SMFIC_BODYEOB))  # end of message: eom runs
        client.settimeout(IDLE * 4)
        answer = client.recv(100)  # after 2.5 idle timeouts of processing
        assert answer == protocol.frame(protocol.SMFIR_ACCEPT)

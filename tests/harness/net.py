"""Loopback ports and readiness waits for services the tests start."""

from __future__ import annotations

import socket
import time

_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now and not handed out before in this
    test run: the kernel may give the same ephemeral port to two calls in a row when
    nothing has bound the first yet (two listeners of one daemon then collide)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


def wait_for_milter(listen: str, timeout: float = 120.0) -> None:
    """Until the milter at ``listen`` (``host:port`` or ``unix:/path``) answers an option
    negotiation: it listens before its scanner is loaded, and under load that takes long
    enough for Postfix's first client to give up waiting for the greeting."""
    from aliasd.doctor import milter_handshake

    deadline = time.monotonic() + timeout
    while True:
        problem = milter_handshake(listen)
        if problem is None:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the milter at {listen} is not ready after {timeout}s: {problem}")
        time.sleep(0.1)

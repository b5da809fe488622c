"""Where a daemon listens: ``HOST:PORT``, ``[IPv6]:PORT`` or ``unix:/path``, one parser
for lookupd and the milter, and the words Postfix uses for the same place."""

from __future__ import annotations

from dataclasses import dataclass


class ListenError(ValueError):
    """A listen address that is not ``HOST:PORT``, ``[IPv6]:PORT`` or ``unix:/path``."""


@dataclass(frozen=True)
class ListenSpec:
    """A TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> ListenSpec:
        """``127.0.0.1:10031``, ``inet:127.0.0.1:10031``, ``[::1]:10031``,
        ``unix:/run/aliasd/x.sock`` (or ``local:``). Port 0 asks for any free port."""
        original = text
        text = text.strip()
        if text.startswith(("unix:", "local:")):
            path = text.split(":", 1)[1]
            if not path.startswith("/"):
                raise ListenError(f"{original!r}: a unix socket needs an absolute path")
            return cls(path=path)
        if text.startswith("inet:"):
            text = text[5:]
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ListenError(f"{original!r} is not HOST:PORT or unix:/path")
        if int(port) > 65535:
            raise ListenError(f"{original!r}: port out of range")
        return cls(host=host.strip("[]"), port=int(port))

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.is_ipv6 else self.host
        return f"{host}:{self.port}"

    def postfix(self) -> str:
        """How Postfix names it in smtpd_milters and socketmap tables: ``inet:HOST:PORT``
        or ``unix:PATH``."""
        return f"unix:{self.path}" if self.path else f"inet:{self}"

"""A small authoritative DNS server of the tests' own, on 127.0.0.1 (UDP and TCP on one
port), built on dnspython's message classes. Tests set the records it serves; aliasd
reaches it through the ``dns_resolver`` setting, so DKIM, SPF and DMARC lookups are
real DNS queries without network.

Names are answered case-insensitively. A name with no records at all is NXDOMAIN; a
known name without the asked type is an empty NOERROR answer (NODATA). Names put in
``silent`` get no answer, which a resolver sees as a timeout."""

from __future__ import annotations

import socketserver
import struct
import threading
from collections.abc import Iterable

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from tests.harness.net import free_port

# Answers are not cacheable by default: tests change records between messages and
# aliasd's resolver caches for the TTL. A benchmark may pass a longer one.
TTL = 0


def _txt_rdata_text(value: str) -> str:
    """A TXT value as presentation text, split into the 255-byte strings DNS needs."""
    raw = value.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join('"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def _strip_comment(line: str) -> str:
    """A zone-file line without its ``;`` comment (a ``;`` inside quotes is data)."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            quoted = not quoted
        elif ch == ";" and not quoted:
            return line[:i]
    return line


def _key(name: str) -> str:
    return name.lower().rstrip(".")


class DnsServer:
    """``server.add("example.com", "TXT", "v=spf1 -all")``; ``server.address`` is the
    ``host:port`` to give aliasd's ``dns_resolver``."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, ttl: int = TTL) -> None:
        self.ttl = ttl
        self.host = host
        self.port = port or free_port()
        self._records: dict[str, dict[str, list[str]]] = {}
        self._lock = threading.Lock()
        self.silent: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # records -------------------------------------------------------------------------

    def add(self, name: str, rtype: str, value: str) -> None:
        """One record; TXT values are plain text (split into strings as needed), MX is
        ``"10 mx.example.net"``, A is a dotted quad."""
        with self._lock:
            self._records.setdefault(_key(name), {}).setdefault(rtype.upper(), []).append(value)

    def set(self, name: str, rtype: str, values: Iterable[str]) -> None:
        with self._lock:
            self._records.setdefault(_key(name), {})[rtype.upper()] = list(values)

    def remove(self, name: str, rtype: str | None = None) -> None:
        with self._lock:
            if rtype is None:
                self._records.pop(_key(name), None)
            else:
                self._records.get(_key(name), {}).pop(rtype.upper(), None)

    def add_zone_lines(self, text: str) -> None:
        """Records from zone-file lines (``name TTL IN TYPE data``), as ``aliasd dns``
        prints them; comments and blank lines are skipped."""
        for line in text.splitlines():
            line = _strip_comment(line).strip()
            if not line:
                continue
            parts = line.split(None, 4)
            name, _ttl, _cls, rtype, data = parts
            if rtype.upper() == "TXT":
                rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, data)
                data = b"".join(rd.strings).decode()
            self.add(name, rtype, data)

    # answering -----------------------------------------------------------------------

    def answer(self, wire: bytes) -> dns.message.Message | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - garbage in, no answer out
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name = _key(question.name.to_text())
        rtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rtype))
        if name in self.silent:
            return None
        with self._lock:
            node = self._records.get(name)
            values = list(node.get(rtype, [])) if node else []
        if node is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        if node is None or not values:
            # an SOA in the authority section gives the negative answer its TTL (RFC 2308)
            zone = dns.name.from_text(".".join(name.split(".")[-2:]) or ".")
            response.authority.append(dns.rrset.from_text(
                zone, self.ttl, "IN", "SOA",
                f"ns.{zone} hostmaster.{zone} 1 3600 600 86400 {self.ttl}"))  # fmt: skip
            return response
        if values:
            texts = [_txt_rdata_text(v) if rtype == "TXT" else v for v in values]
            rrset = dns.rrset.from_text_list(question.name, self.ttl, "IN", rtype, texts)
            response.answer.append(rrset)
        return response

    def _udp_reply(self, wire: bytes) -> bytes | None:
        response = self.answer(wire)
        if response is None:
            return None
        try:
            query = dns.message.from_wire(wire)
            limit = max(512, query.payload) if query.edns >= 0 else 512
        except Exception:  # noqa: BLE001
            limit = 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer = []
            response.flags |= dns.flags.TC
            return response.to_wire()

    # lifecycle -----------------------------------------------------------------------

    def start(self) -> DnsServer:
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = outer._udp_reply(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn = self.request
                conn.settimeout(5)
                try:
                    while True:
                        head = conn.recv(2)
                        if len(head) < 2:
                            return
                        (length,) = struct.unpack("!H", head)
                        data = b""
                        while len(data) < length:
                            chunk = conn.recv(length - len(data))
                            if not chunk:
                                return
                            data += chunk
                        response = outer.answer(data)
                        if response is None:
                            return
                        reply = response.to_wire()
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
                except OSError:
                    return

        class UdpServer(socketserver.ThreadingUDPServer):
            daemon_threads = True
            allow_reuse_address = True

        class TcpServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._servers = [TcpServer((self.host, self.port), Tcp),
                         UdpServer((self.host, self.port), Udp)]  # fmt: skip
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []

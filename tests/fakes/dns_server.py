"""A DNS server on 127.0.0.1 (UDP) that answers TXT queries from a table, for check-domain.

Each name maps to its TXT strings (a list of records; a record longer than 255 bytes is split
into character-strings as DNS requires), or to a mode: NXDOMAIN for an absent name, SERVFAIL
for a name listed in `servfail`, and silence (the client times out) for one in `silent`.
A name that exists with no TXT record answers NOERROR with an empty answer (NODATA).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@dataclass
class FakeDns:
    txt: dict[str, list[str]] = field(default_factory=dict)
    servfail: set[str] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)
    queries: list[str] = field(default_factory=list)
    port: int = 0

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def answer(self, wire: bytes) -> bytes | None:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.queries.append(name)
        if name in self.silent:
            return None
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.txt:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            texts = []
            for record in self.txt[name]:
                raw = record.encode()
                chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
                texts.append(" ".join('"' + c.decode().replace('"', '\\"') + '"' for c in chunks))
            response.answer.append(
                dns.rrset.from_text_list(question.name, 300, dns.rdataclass.IN, "TXT", texts)
            )
        return response.to_wire()


@contextmanager
def fake_dns(server: FakeDns) -> Iterator[FakeDns]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    server.port = sock.getsockname()[1]
    stopping = threading.Event()

    def serve() -> None:
        while not stopping.is_set():
            try:
                wire, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = server.answer(wire)
            if reply is not None:
                sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stopping.set()
        thread.join(timeout=2)
        sock.close()

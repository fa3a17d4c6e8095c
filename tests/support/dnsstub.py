"""A DNS server for tests: answers TXT queries from a table on 127.0.0.1 (UDP).

Real DNS code (dnspython, Perl's Net::DNS, `gateway ... check` with GATEWAY_DNS_SERVER) talks
to it exactly as to a real resolver.
"""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT


class DnsStub:
    """Answers TXT queries for a fixed table on 127.0.0.1 (UDP); NXDOMAIN for everything else."""

    def __init__(
        self, records: dict[str, str | list[str]] | None = None, silent: tuple[str, ...] = ()
    ) -> None:
        # name -> one TXT value, or several TXT records; names in `silent` get no answer at
        # all (a timeout for the client).
        self.records = {name.lower().rstrip("."): value for name, value in (records or {}).items()}
        self.silent = {name.lower().rstrip(".") for name in silent}
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> DnsStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            if query.question[0].name.to_text().rstrip(".").lower() in self.silent:
                continue
            self.sock.sendto(self._answer(query).to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text().rstrip(".").lower()
        self.queries.append(name)
        value = self.records.get(name)
        if question.rdtype != dns.rdatatype.TXT or value is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        rrset = response.find_rrset(
            response.answer, question.name, dns.rdataclass.IN, dns.rdatatype.TXT, create=True
        )
        for text in [value] if isinstance(value, str) else value:
            # Real DKIM records are longer than one 255-byte TXT string: split like a zone.
            strings = [text[i : i + 255].encode() for i in range(0, len(text), 255)]
            rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings), ttl=60)
        return response

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

"""Reading the DATA phase in large chunks instead of one `readuntil` per line.

aiosmtpd awaits every line of a message separately; for a 20 KB newsletter that is hundreds of
awaits and most of the framework's CPU. Here DATA is read in chunks and the end-of-data marker
is searched in the bytes, with exactly the guarantees the line reader gave:

* the message ends only at CRLF "." CRLF (a "." line after a bare LF or CR is message content,
  which the engine then refuses as a bare line ending: SMTP smuggling never splits a message);
* over-long lines and over-size messages are drained to the marker and then refused;
* bytes after the marker (pipelined commands) are handed back to the command reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

END = b"\r\n.\r\n"
_DOT_STUFFED = re.compile(rb"(?m)^\.")


@dataclass
class DataAccumulator:
    size_limit: int | None
    line_limit: int
    buffer: bytearray = field(default_factory=lambda: bytearray(b"\r\n"))
    too_big: bool = False
    too_long: bool = False
    done: bool = False
    leftover: bytes = b""
    size: int = 0
    _scanned: int = 0  # everything before this offset has been checked for line length
    _line_start: int = 2

    def feed(self, chunk: bytes) -> bool:
        """Add bytes; True once the end-of-data marker has been seen."""
        search_from = max(0, len(self.buffer) - len(END) + 1)
        self.buffer += chunk
        end = self.buffer.find(END, search_from)
        if end >= 0:
            self.leftover = bytes(self.buffer[end + len(END):])
            del self.buffer[end + 2:]  # keep the final CRLF of the last line
            self.done = True
        self._check_lines()
        self.size = len(self.buffer) - 2
        if self.size_limit and self.size > self.size_limit:
            self.too_big = True
        if (self.too_big or self.too_long) and not self.done:
            # Draining: remember only what the marker search and the line check still need.
            keep = bytes(self.buffer[-(len(END) - 1):])
            dropped = len(self.buffer) - len(keep)
            self.buffer = bytearray(keep)
            self._scanned = max(0, self._scanned - dropped)
            self._line_start = max(0, self._line_start - dropped)
        return self.done

    def _check_lines(self) -> None:
        buf = self.buffer
        pos = max(self._scanned, self._line_start)
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                if len(buf) - self._line_start > self.line_limit:
                    self.too_long = True
                self._scanned = max(self._line_start, len(buf) - 1)
                return
            # The line with its CRLF must fit: 1001 = 998 octets + CRLF + a transparency dot.
            if nl - self._line_start + 2 > self.line_limit:
                self.too_long = True
            self._line_start = pos = nl + 2

    def content(self) -> bytes:
        """The message with the transparency dots removed (RFC 5321 4.5.2)."""
        return _DOT_STUFFED.sub(b"", bytes(self.buffer[2:]))

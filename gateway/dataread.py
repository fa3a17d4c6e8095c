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

from dataclasses import dataclass, field

END = b"\r\n.\r\n"


@dataclass
class DataAccumulator:
    size_limit: int | None
    line_limit: int
    # The message so far, after a virtual CRLF so that the first line looks like any other.
    buffer: bytearray = field(default_factory=lambda: bytearray(b"\r\n"))
    too_big: bool = False
    too_long: bool = False
    done: bool = False
    leftover: bytes = b""
    size: int = 0

    def feed(self, chunk: bytes) -> bool:
        """Add bytes; True once the end-of-data marker has been seen."""
        search_from = max(0, len(self.buffer) - len(END) + 1)
        self.buffer += chunk
        end = self.buffer.find(END, search_from)
        if end >= 0:
            self.leftover = bytes(self.buffer[end + len(END) :])
            del self.buffer[end + 2 :]  # keep the final CRLF of the last line
            self.done = True
        self.size = len(self.buffer) - 2
        if self.size_limit and self.size > self.size_limit:
            self.too_big = True
        if self.too_big and not self.done:
            # Draining: keep only what the marker search still needs; memory stays bounded.
            del self.buffer[: -(len(END) - 1)]
        if self.done and not self.too_big:
            # The line with its CRLF must fit: 1001 = 998 octets + CRLF + a transparency dot.
            # Checked once at the end; the size limit bounds the buffer meanwhile.
            self.too_long = has_long_line(self.buffer, self.line_limit)
        return self.done

    def content(self) -> bytes:
        """The message with the transparency dots removed (RFC 5321 4.5.2): every line that
        starts with a dot loses that dot."""
        return bytes(self.buffer).replace(b"\r\n.", b"\r\n")[2:]


def has_long_line(data: bytes | bytearray, limit: int) -> bool:
    """`max(map(len, data.split(b"\r\n"))) + 2 > limit` without splitting: a line starting at
    `start` fits if a CRLF lies wholly within data[start:start + limit]. One rfind per window
    of `limit` bytes finds the last such CRLF; every line starting before it fits too (it ends
    at or before it), so the next window starts after it: ~20 C-speed searches for 20 KB,
    not a list of every line."""
    end = len(data)
    start = 0
    while True:
        crlf = data.rfind(b"\r\n", start, start + limit)
        if crlf < 0:
            # No CRLF within reach: the line from `start` is too long, unless it is the
            # unterminated tail (empty after a final CRLF) and short enough.
            return end - start + 2 > limit
        start = crlf + 2

"""message-format: RFC 5322 violations mailbox providers refuse, and SMTP smuggling material
(RULES.md "Message format"): refuse, never repair silently."""

from __future__ import annotations

import re

from gateway.core.policy import Policy, PolicyContext, Touches
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict

MAX_LINE = 998  # octets, without the CRLF (RFC 5322 2.1.1)
EXACTLY_ONE = ("From", "Date", "Message-ID")
AT_MOST_ONE = ("To", "Subject")
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


class MessageFormat(Policy):
    name = "message-format"
    phases = (Phase.DATA,)
    touches = Touches.NOTHING  # reads the message only
    description = "one From, Date and Message-ID; at most one To and Subject; CRLF only; short lines"

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        raw = txn.raw
        lines = raw.split(b"\r\n")
        # Every CR and every LF is part of a CRLF exactly when there are as many of each
        # as CRLFs (len(lines) - 1): three C-speed scans instead of a regex over every
        # octet. Only a refused message needs the regex, to say where.
        crlfs = len(lines) - 1
        bare = None if raw.count(b"\r") == raw.count(b"\n") == crlfs else _BARE.search(raw)
        if bare is not None:
            kind = "LF" if bare.group() == b"\n" else "CR"
            return Verdict.reject(
                "Message contains a bare CR or LF; use CRLF line endings (SMTP smuggling protection)",
                f"bare {kind} at octet {bare.start()}",
                enhanced="5.6.0")
        problems = []
        for name in EXACTLY_ONE:
            count = len(txn.headers(name))
            if count != 1:
                problems.append(f"{'no' if count == 0 else count} {name} header"
                                f"{'s' if count > 1 else ''}; exactly one is required")
        for name in AT_MOST_ONE:
            count = len(txn.headers(name))
            if count > 1:
                problems.append(f"{count} {name} headers; at most one is allowed")
        # max(map(len, ...)) runs in C; only a too long line needs the loop for its number.
        if max(map(len, lines)) > MAX_LINE:
            for number, line in enumerate(lines, start=1):
                if len(line) > MAX_LINE:
                    problems.append(f"line {number} is {len(line)} octets long; "
                                    f"lines may have at most {MAX_LINE} octets")
                    break
        if problems:
            return Verdict.reject("Message format: " + "; ".join(problems),
                                  "RFC 5322 format: " + "; ".join(problems), enhanced="5.6.0")
        return Verdict.ok("format checked: From/Date/Message-ID once, To/Subject at most once, "
                          "CRLF only, lines within 998 octets")

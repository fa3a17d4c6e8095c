"""message-format: RFC 5322 violations mailbox providers refuse (RULES.md "Message format"):
refuse, never repair silently.

Bare CR or LF (SMTP smuggling material) is not checked here: the engine refuses such a message
at the end of DATA before any policy runs (`Engine.data`, reply `BARE_LINE_ENDING`), so every
message this policy sees has CRLF line ends only."""

from __future__ import annotations

from gateway.core.policy import Policy, PolicyContext, Touches
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict

MAX_LINE = 998  # octets, without the CRLF (RFC 5322 2.1.1)
EXACTLY_ONE = ("From", "Date", "Message-ID")
AT_MOST_ONE = ("To", "Subject")


class MessageFormat(Policy):
    name = "message-format"
    phases = (Phase.DATA,)
    touches = Touches.NOTHING  # reads the message only
    description = "one From, Date and Message-ID; at most one To and Subject; short lines"

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        lines = txn.raw.split(b"\r\n")
        problems = []
        for name in EXACTLY_ONE:
            count = len(txn.headers(name))
            if count != 1:
                problems.append(
                    f"{'no' if count == 0 else count} {name} header"
                    f"{'s' if count > 1 else ''}; exactly one is required"
                )
        for name in AT_MOST_ONE:
            count = len(txn.headers(name))
            if count > 1:
                problems.append(f"{count} {name} headers; at most one is allowed")
        # max(map(len, ...)) runs in C; only a too long line needs the loop for its number.
        if max(map(len, lines)) > MAX_LINE:
            for number, line in enumerate(lines, start=1):
                if len(line) > MAX_LINE:
                    problems.append(
                        f"line {number} is {len(line)} octets long; lines may have at most {MAX_LINE} octets"
                    )
                    break
        if problems:
            return Verdict.reject(
                "Message format: " + "; ".join(problems),
                "RFC 5322 format: " + "; ".join(problems),
                enhanced="5.6.0",
            )
        return Verdict.ok(
            "format checked: From/Date/Message-ID once, To/Subject at most once, lines within 998 octets"
        )

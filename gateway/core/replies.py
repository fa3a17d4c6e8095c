"""Named SMTP replies (RFC 3463 enhanced codes), in the spirit of haraka-dsn.

Every text here is what a client may see: it explains, and never shows internals.
"""

from __future__ import annotations

from gateway.core.verdict import Reply

OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure, try again later")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_TOO_MANY_FAILURES = Reply(421, "4.7.0", "Too many failed authentication attempts, closing connection")
AUTH_THROTTLED = Reply(
    421, "4.7.0", "Too many failed authentication attempts from your address, try again later"
)
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients; send the others in a new transaction")
BARE_LINE_ENDING = Reply(
    550, "5.6.0", "Message contains a bare CR or LF; use CRLF line endings (SMTP smuggling protection)"
)
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.6)")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds the fixed maximum message size")

TOO_MANY_SESSIONS = Reply(421, "4.3.2", "Too many connections, try again later")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
POLICY_ERROR = Reply(451, "4.3.5", "Policy check unavailable, please try again later")
STORE_UNAVAILABLE = Reply(451, "4.3.0", "Temporary local problem, please try again later")
DOWNSTREAM_UNAVAILABLE = Reply(451, "4.4.1", "Downstream mail server unavailable, try again later")
DOWNSTREAM_TIMEOUT = Reply(451, "4.4.2", "Downstream mail server timed out, try again later")
DOWNSTREAM_ERROR = Reply(451, "4.4.0", "Downstream mail server error, try again later")
DOWNSTREAM_TLS = Reply(451, "4.7.5", "Cannot establish TLS with downstream mail server, try again later")
PARTIAL_RECIPIENTS = Reply(
    451,
    "4.5.3",
    "Downstream refused some recipients; retry them in separate transactions",
)
INTERNAL_ERROR = Reply(451, "4.3.0", "Temporary local problem, please try again later")
UNSUBSCRIBE_UNAVAILABLE = Reply(
    451, "4.3.5", "Unsubscribe links cannot be made right now, please try again later"
)


def too_many_mime_parts(limit: int) -> Reply:
    return Reply(552, "5.3.4", f"Message has more than {limit} MIME parts, the most accepted")


def mime_nested_too_deep(limit: int) -> Reply:
    return Reply(552, "5.3.4", f"Message has MIME parts nested more than {limit} deep, the most accepted")


# Command-line hygiene (SMTP smuggling and envelope injection): a command line ends only at CRLF,
# and an address is relayed exactly as the policies saw it, so it must not carry control bytes.
BARE_NEWLINE_IN_COMMAND = Reply(500, "5.5.2", "Bare CR or LF in a command line; use CRLF line endings")
ADDRESS_CONTROL_CHARACTER = Reply(501, "5.1.3", "Control characters are not allowed in an address")

"""The DKIM step as the engine sees it: an object that signs message bytes, and its refusal.

The signer itself (gateway/signing.py, dkimpy underneath) is built by the server and handed to
the engine; both import this module, so neither imports the other.
"""

from __future__ import annotations

from typing import Any, Protocol


class SigningUnavailable(Exception):
    """No DKIM key for the From domain and `dkim.missing_key: tempfail`."""


class MessageSigning(Protocol):
    def signature(self, data: bytes) -> tuple[bytes, Any]:
        """The DKIM-Signature fields to put on top of `data` (b"" when it stays unsigned) and
        what happened (for the log line); may raise `SigningUnavailable`."""
        ...

"""The standard library's `email` parser, bypassed for well-formed mail.

`gateway/mime/fastparse.py` builds the `compat32` tree of a well-formed message itself,
writing `Message._headers` and `Message._payload` as the feed parser does: internals of the
`email` package of the Python versions below, held to the feed parser by
tests/unit/test_mime_fastparse.py. On another Python, or with `GATEWAY_NO_FASTPATHS=1`, every
message goes through `email.parser.BytesParser(policy=compat32)`. (The code stays in
gateway/mime/, where the MIME inspection lives; only the decision is here.)
"""

from __future__ import annotations

import platform

from gateway.fastpaths.switch import Status, decide

WRITTEN_FOR = ((3, 11), (3, 14))
STATUS = Status("python", "", False, "not configured yet")
ACTIVE = False


def configure() -> Status:
    global STATUS, ACTIVE
    STATUS = decide("python", WRITTEN_FOR, installed=platform.python_version())
    ACTIVE = STATUS.active
    return STATUS


configure()  # at import: decided before the first message is parsed

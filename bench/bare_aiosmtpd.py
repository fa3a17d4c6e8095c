"""The baseline: a bare aiosmtpd server that accepts every message and discards it.

python bench/bare_aiosmtpd.py PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiosmtpd.smtp import SMTP


class Discard:
    async def handle_DATA(self, server: SMTP, session: object, envelope: object) -> str:
        return "250 2.0.0 Ok: discarded"


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Discard(), hostname="bare.bench", data_size_limit=None), "127.0.0.1", port, backlog=1024
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

"""A local SMTP catcher: accepts messages on 127.0.0.1:1025 and writes each to <dir>/<n>.eml.

Two domains answer like real servers that say no, so tests can see what a refusal does: recipients at
``refused.test`` get ``550`` (for good) and those at ``deferred.test`` get ``451`` (try later), each reply naming
the address, as real servers do.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

REFUSED_DOMAIN = "refused.test"
DEFERRED_DOMAIN = "deferred.test"


class SaveToDirectory:
    """aiosmtpd handler: one numbered .eml file per message, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = [int(p.stem) for p in self.directory.glob("*.eml") if p.stem.isdigit()]
        self.next_number = max(existing, default=0) + 1

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain == REFUSED_DOMAIN:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if domain == DEFERRED_DOMAIN:
            return f"451 4.2.0 <{address}>: Recipient address rejected: Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        number = self.next_number
        self.next_number += 1
        target = self.directory / f"{number}.eml"
        tmp = target.with_suffix(".tmp")
        content: bytes = envelope.original_content or envelope.content
        tmp.write_bytes(content)
        tmp.rename(target)
        return "250 Message accepted for delivery"


async def serve(host: str, port: int, directory: Path) -> None:
    controller = Controller(SaveToDirectory(directory), hostname=host, port=port)
    controller.start()
    print(f"smtp catcher listening on {host}:{port}, writing to {directory}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path("var/mail"), help="where to write <n>.eml files")
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.dir))


if __name__ == "__main__":
    main()

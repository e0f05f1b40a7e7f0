"""A local SMTP catcher: accepts every message on 127.0.0.1:1025 and writes it to <dir>/<n>.eml."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class SaveToDirectory:
    """aiosmtpd handler: one numbered .eml file per message, written atomically."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        existing = [int(p.stem) for p in self.directory.glob("*.eml") if p.stem.isdigit()]
        self.next_number = max(existing, default=0) + 1

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

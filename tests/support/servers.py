"""Real HTTP servers for tests: an ASGI app on Hypercorn on a free loopback port.

``serving(app)`` runs the app in the test's event loop (lifespan included, so the
gateway's refresher and pacer run) and stops it on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from waitroom.shared.processes import free_port


class Server:
    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Server:
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.errorlog = None
        config.graceful_timeout = 0.5
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            serve(self.app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]
        )
        for _ in range(200):
            await asyncio.sleep(0.02)
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await writer.wait_closed()
                return self
            if self._task.done():
                self._task.result()
        raise RuntimeError(f"server on port {self.port} did not start")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None


@contextlib.asynccontextmanager
async def serving(app: Any, port: int | None = None) -> AsyncIterator[Server]:
    server = await Server(app, port).start()
    try:
        yield server
    finally:
        await server.stop()

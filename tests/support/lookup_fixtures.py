"""Shared helpers for the lookup tests: a small real database and a real server.

The server is the real app on real Hypercorn on a free localhost port, talked to
over HTTP with aiohttp, so status codes, headers and bodies are what a client sees.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from hypercorn.asyncio import serve
from hypercorn.config import Config

from waitroom.lookup import sample
from waitroom.lookup.app import LookupApp, create_app
from waitroom.lookup.importing.importer import import_csv
from waitroom.shared.admission import HEADER, AdmissionSigner
from waitroom.shared.processes import free_port

SEED = 7
STUDENTS = 300
KEYS = ["new-test-key", "old-test-key"]


def make_db(directory: Path, students: int = STUDENTS, seed: int = SEED) -> Path:
    csv_path = directory / f"sample-{seed}-{students}.csv"
    sample.write_csv(csv_path, students, seed)
    db = directory / "results.sqlite3"
    import_csv(csv_path, db)
    return db


def copy_db(source: Path, directory: Path) -> Path:
    db = directory / "results.sqlite3"
    shutil.copyfile(source, db)
    return db


@dataclass
class Backend:
    base: str
    http: aiohttp.ClientSession
    signer: AdmissionSigner
    app: LookupApp

    def admitted(self, **extra: str) -> dict[str, str]:
        return {HEADER: self.signer.sign("cbse-xii", "pass-1"), **extra}

    async def api(
        self, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        async with self.http.post(
            f"{self.base}/api/result",
            json=body,
            headers=self.admitted() if headers is None else headers,
        ) as r:
            return r.status, await r.json(content_type=None), dict(r.headers)

    async def form(
        self, data: dict[str, str], headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        async with self.http.post(
            f"{self.base}/result",
            data=data,
            headers=self.admitted() if headers is None else headers,
        ) as r:
            return r.status, await r.text()


@asynccontextmanager
async def running_backend(
    db: Path, *, standalone: bool = False, keys: list[str] | None = None
) -> AsyncIterator[Backend]:
    app = create_app(db, admission_keys=keys or KEYS, standalone=standalone)
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    )
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(f"{base}/healthz") as r:
                    if r.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
        try:
            yield Backend(base, http, AdmissionSigner(KEYS), app)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)

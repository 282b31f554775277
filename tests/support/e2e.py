"""End-to-end fixtures: a real lookup backend and real gateway servers over HTTP.

Registered for every test module by ``tests/conftest.py`` (``pytest_plugins``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from tests.support.gateway_support import BACKEND_KEYS, make_settings
from tests.support.servers import Server, serving
from waitroom.gateway.app import create_app
from waitroom.lookup import sample
from waitroom.lookup.app import create_app as create_backend
from waitroom.lookup.importing import importer

STUDENTS = 40
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="session")
def results_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    csv_path = folder / "sample.csv"
    sample.write_csv(csv_path, STUDENTS)
    db = folder / "results.sqlite3"
    importer.import_csv(csv_path, db)
    return db


@pytest.fixture
async def backend(results_db: Path) -> AsyncIterator[Server]:
    async with serving(create_backend(results_db, admission_keys=BACKEND_KEYS)) as server:
        yield server


GatewayFactory = Callable[..., contextlib.AbstractAsyncContextManager[Server]]


@pytest.fixture
def gateway(redis_url: str, backend: Server, redis_sync: Any) -> GatewayFactory:
    """Start a gateway app (another 'node' each call) sharing Redis and the backend."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Server]:
        values: dict[str, Any] = {"backend_url": backend.url}
        values.update(overrides)
        settings = make_settings(values.pop("redis_url", redis_url), **values)
        async with serving(create_app(settings), values.get("port")) as server:
            yield server

    return start


def student() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies for 127.0.0.1, as a browser does.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def status(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(base + "/status", headers=JSON) as response:
        assert response.status in (200, 202, 503), response.status
        body: dict[str, Any] = await response.json()
        return body


async def join(session: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, Any]]:
    async with session.get(base + "/", headers=JSON) as response:
        body = (
            await response.json(content_type=None)
            if "json" in (response.content_type or "")
            else {}
        )
        return response.status, body


async def wait_for_credit(base: str, timeout: float = 5.0) -> None:
    """Until the gateway's view has a state (its first refresh and pacer tick)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(base + "/queue/state") as response:
                if response.status == 200:
                    await asyncio.sleep(0.3)
                    return
            await asyncio.sleep(0.05)
    raise AssertionError("gateway never published a queue state")


def candidate_form(k: int = 0) -> dict[str, str]:
    sheet = sample.candidate(sample.DEFAULT_SEED, k)
    return {"roll": sheet.roll, "dob": sheet.dob.isoformat()}


def forge(keys: tuple[str, ...], salt: str, payload: Any, age_s: int = 0) -> str:
    """A token signed ``age_s`` seconds ago, as if by a gateway with these keys."""

    class Aged(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age_s

    return URLSafeTimedSerializer(list(reversed(keys)), salt=salt, signer=Aged).dumps(payload)

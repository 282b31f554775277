"""Helpers for the browser tests: Debian's Chromium driven by Playwright.

The tests drive the system's Chromium (``/usr/bin/chromium``), never a browser that
Playwright downloads: there is nothing to fetch, and CI installs the same package
(``.ci/run``). A missing browser fails the tests with the command that installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

try:
    from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright
except ImportError as exc:  # pragma: no cover - a broken setup, said plainly
    raise ImportError(
        "the browser tests need Playwright's Python package: "
        ".venv/bin/pip install -e '.[test]' (never `playwright install`: the tests "
        "use Debian's Chromium)"
    ) from exc

from tests.support.e2e import GatewayFactory
from tests.support.gateway_support import make_settings
from tests.support.servers import Server, serving
from waitroom.gateway.app import create_app
from waitroom.shared.passwords import hash_password

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = (
    f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium. Install it with "
    "`sudo apt-get install -y --no-install-recommends chromium fonts-noto-core` "
    "(CI does this in .ci/run); do not run `playwright install`."
)
# The machine's network is closed: without the background-networking switches
# Chromium keeps dialling Google's services and floods the log with refused
# connections.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Playwright's own waits (a locator, an expectation): long enough for a loaded
# 2-core machine, well inside the per-test timeout.
DEFAULT_WAIT_MS = 15_000

SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"
ADMIN_PASSWORD = "exam-day admin pass 2026"
JSON = {"Accept": "application/json"}


@functools.cache
def admin_password_hash() -> str:
    """The hash of ADMIN_PASSWORD, made once per run (scrypt costs ~50 ms)."""
    return hash_password(ADMIN_PASSWORD)


# -- the browser ------------------------------------------------------------------


def require_chromium() -> None:
    """Fail (never skip) with the command that installs the browser."""
    if not CHROMIUM.exists():
        pytest.fail(INSTALL_HINT, pytrace=False)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Debian's headless Chromium (see ``require_chromium``)."""
    require_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


class PageErrors:
    """Uncaught JavaScript errors on any page of the contexts it watches."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"{page.url}: {exc}"))
        # A blocked inline handler throws nothing: the policy's refusal is only logged.
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"{page.url}: {message.text}")
                if "Content Security Policy" in message.text
                else None
            ),
        )

    def assert_none(self) -> None:
        assert not self.errors, "JavaScript errors: " + "; ".join(self.errors)


async def new_page(
    browser: Browser, errors: PageErrors, *, timezone_id: str = "UTC"
) -> tuple[BrowserContext, Page]:
    """A page in a fresh context (its own cookies: another person at another desk)."""
    context = await browser.new_context(
        locale="en-US", timezone_id=timezone_id, viewport={"width": 1100, "height": 900}
    )
    context.set_default_timeout(DEFAULT_WAIT_MS)
    context.on("page", errors.watch)
    page = await context.new_page()
    return context, page


PHONE = {"width": 360, "height": 780}


async def phone_page(
    browser: Browser,
    errors: PageErrors,
    *,
    width: int = PHONE["width"],
    locale: str = "en-US",
    color_scheme: Literal["light", "dark"] = "light",
    headers: dict[str, str] | None = None,
) -> tuple[BrowserContext, Page]:
    """A page on a phone-sized screen in a fresh context. Not Chromium's mobile
    emulation: it zooms out to fit a page that is too wide, hiding the overflow
    that the tests look for."""
    context = await browser.new_context(
        locale=locale,
        timezone_id="Asia/Kolkata",
        viewport={"width": width, "height": PHONE["height"]},
        device_scale_factor=2,
        color_scheme=color_scheme,
        extra_http_headers=headers or {},
    )
    context.set_default_timeout(DEFAULT_WAIT_MS)
    context.on("page", errors.watch)
    page = await context.new_page()
    return context, page


class Shots:
    """Screenshots named by test and step: tests/screenshots/<test>-<nn>-<step>.png."""

    def __init__(self, test_name: str) -> None:
        self.prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
        self.count = 0
        SCREENSHOTS.mkdir(exist_ok=True)
        for old in SCREENSHOTS.glob(f"{self.prefix}-*.png"):
            old.unlink()

    async def __call__(self, page: Page, step: str) -> Path:
        self.count += 1
        path = SCREENSHOTS / f"{self.prefix}-{self.count:02d}-{step}.png"
        await page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 0
        return path


# -- the admin page -----------------------------------------------------------------


async def log_in(page: Page, base: str, password: str = ADMIN_PASSWORD) -> None:
    await page.goto(base + "/admin")
    await page.wait_for_url(re.compile(r"/admin/login$"))
    await page.fill("#password", password)
    await page.get_by_role("button", name="Log in").click()
    await page.wait_for_load_state()


def tile(page: Page, key: str) -> Locator:
    """The live view's tile for ``key``."""
    return page.locator(f'#live [data-k="{key}"]')


async def tile_number(page: Page, key: str) -> float | None:
    """A tile's number as admin.js formats it ("1,234.5"); None for "–"."""
    text = (await tile(page, key).inner_text()).strip().replace(",", "")
    try:
        return float(text)
    except ValueError:
        return None


async def wait_for_tile(
    page: Page, key: str, op: str, value: float, timeout_ms: int = DEFAULT_WAIT_MS
) -> None:
    """Until the tile's number compares to ``value`` by ``op`` (">=", ">", "<=", "<")."""
    assert op in (">=", ">", "<=", "<"), op
    await page.wait_for_function(
        """([key, op, value]) => {
            const el = document.querySelector('#live [data-k="' + key + '"]');
            const x = el ? parseFloat(el.textContent.replace(/,/g, "")) : NaN;
            if (Number.isNaN(x)) return false;
            return op === ">=" ? x >= value : op === ">" ? x > value
                : op === "<=" ? x <= value : x < value;
        }""",
        arg=[key, op, value],
        timeout=timeout_ms,
        polling=200,
    )


async def live_updates(page: Page) -> None:
    """Until admin.js has filled the tiles from /admin/live.json at least once more."""
    before = await page.locator("#live-age").inner_text()
    await page.wait_for_function(
        """(before) => {
            const t = document.getElementById("live-age").textContent;
            return t.startsWith("updated") && t !== before;
        }""",
        arg=before,
        polling=100,
    )


# -- students over plain HTTP ------------------------------------------------------


def http_student() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies for 127.0.0.1, as a browser does.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def join(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """Arrive at the room as a JSON client; the answer's body."""
    async with session.get(base + "/", headers=JSON) as response:
        assert response.status in (200, 202), response.status
        body: dict[str, Any] = await response.json(content_type=None)
        return body


async def status(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(base + "/status", headers=JSON) as response:
        assert response.status in (200, 202), response.status
        body: dict[str, Any] = await response.json(content_type=None)
        return body


async def crowd(base: str, n: int, concurrency: int = 16) -> list[dict[str, Any]]:
    """``n`` students join (each without cookies: a new place each); their answers."""
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:

        async def one() -> dict[str, Any]:
            async with gate:
                return await join(session, base)

        return list(await asyncio.gather(*(one() for _ in range(n))))


async def wait_for_state(base: str, timeout: float = 5.0) -> None:
    """Until the gateway publishes the room's state (its first refresh and tick)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(base + "/queue/state") as response:
                if response.status == 200:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError("the gateway never published a queue state")


def seconds_left(countdown: str) -> int:
    """The pre-queue page's countdown ("1:05", "0:07", "1:00:05") in seconds."""
    total = 0
    for part in countdown.strip().split(":"):
        total = total * 60 + int(part)
    return total


# -- fixtures shared by the browser test modules (imported by them) ----------------


@pytest.fixture(name="gateway")
def admin_gateway(redis_url: str, backend: Server, redis_sync: Any) -> GatewayFactory:
    """The end-to-end gateway (``tests.support.e2e``), with the admin page on (password:
    ADMIN_PASSWORD) and started only once it publishes a state."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Server]:
        values: dict[str, Any] = {
            "backend_url": backend.url,
            "admin_password_hash": admin_password_hash(),
            **overrides,
        }
        async with serving(create_app(make_settings(redis_url, **values))) as server:
            await wait_for_state(server.url)
            yield server

    return start


@pytest.fixture(name="shots")
def shots_of_the_test(request: pytest.FixtureRequest) -> Shots:
    return Shots(request.node.name)

"""The admin's live view in a real browser: what the tiles and the chart tell an admin.

Debian's Chromium (Playwright) against a real gateway, backend and Redis. The chart
is fed through Redis as the pacer's sampler feeds it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from playwright.async_api import Page, expect

# The shared fixtures (gateway with the admin page on, shots) come with these names.
from tests.support.browser_support import (  # noqa: F401
    PageErrors,
    Shots,
    admin_gateway,
    admin_password_hash,
    chromium,
    live_updates,
    log_in,
    new_page,
    shots_of_the_test,
    tile,
    wait_for_state,
)
from tests.support.e2e import GatewayFactory
from tests.support.gateway_support import make_settings
from waitroom.line.keys import RoomKeys
from waitroom.line.state import Queue

# WCAG 2.x AA for text under 18 pt (24 px) or 14 pt bold.
AA = 4.5

CONTRAST = """(selectors) => {
  function rgb(text) {
    const m = text.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(",").map(Number);
    return { c: p.slice(0, 3), a: p.length > 3 ? p[3] : 1 };
  }
  function hex(text) {
    const h = text.replace("#", "");
    return { c: [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16)), a: 1 };
  }
  function lum(c) {
    const [r, g, b] = c.map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }
  function background(el) {
    for (let e = el; e; e = e.parentElement) {
      const b = rgb(getComputedStyle(e).backgroundColor);
      if (b && b.a > 0) return b.c;
    }
    return [255, 255, 255];
  }
  const out = [];
  for (const selector of selectors) {
    for (const el of document.querySelectorAll(selector)) {
      const fill = el.getAttribute("fill");
      const fg = fill ? hex(fill).c : rgb(getComputedStyle(el).color).c;
      const bg = background(el.closest("svg") || el);
      const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
      out.push([selector + " " + el.textContent.trim(), (hi + 0.05) / (lo + 0.05),
                parseFloat(getComputedStyle(el).fontSize)]);
    }
  }
  return out;
}"""

# The largest step between neighbouring points of any one line, in chart units
# (600 units span 900 s: one second is 0.67).
WIDEST_STEP = """() => {
  let widest = 0;
  for (const line of document.querySelectorAll("#chart polyline")) {
    const xs = line.getAttribute("points").trim().split(/\\s+/).map((p) => parseFloat(p));
    for (let i = 1; i < xs.length; i++) widest = Math.max(widest, xs[i] - xs[i - 1]);
  }
  return widest;
}"""


def _sample(t: float, k: int, p95: float | None) -> dict[str, Any]:
    return {
        "t": t,
        "waiting": 500 - k,
        "seq": 1000 + k,
        "frontier": 500 + 2 * k,
        "admitted_per_s": 2.0,
        "arrivals_per_s": 1.0 + (k % 3),
        "target_rate": 2.0,
        "active": 40,
        "max_active": 1000,
        "backend_per_s": 2.0,
        "p50_ms": None if p95 is None else p95 / 2,
        "p95_ms": p95,
        "error_rate": None if p95 is None else 0.0,
        "admitted_total": 500 + 2 * k,
        "shown_total": 400 + k,
        "effective_rate": None,
        "noshow_factor": 1.25,
    }


async def _seed_history(client: aioredis.Redis) -> None:
    """Two minutes of samples with a 40 s hole between them (a pacer that was gone),
    and a stretch without backend traffic (no p95) inside the second minute."""
    now = time.time()
    samples = [_sample(now - 300 + k, k, 80.0) for k in range(60)]
    samples += [_sample(now - 200 + k, 60 + k, None if 20 <= k < 40 else 90.0) for k in range(60)]
    # The series is a list, newest first, as the sampler pushes it.
    await client.lpush(RoomKeys("results").series, *(json.dumps(s) for s in samples))


async def _contrast(page: Page, *selectors: str) -> list[tuple[str, float, float]]:
    found: list[tuple[str, float, float]] = await page.evaluate(CONTRAST, list(selectors))
    return found


async def test_the_chart_breaks_at_gaps_and_its_legend_is_readable(
    gateway: GatewayFactory, redis_client: aioredis.Redis, shots: Shots
) -> None:
    errors = PageErrors()
    async with gateway(rate=2.0) as gw, chromium() as browser:
        await _seed_history(redis_client)
        _, page = await new_page(browser, errors)
        await log_in(page, gw.url)
        await live_updates(page)
        await expect(page.locator("#chart polyline").first).to_be_attached()
        await shots(page, "chart-with-gaps")
        # Neither the 40 s hole nor the 20 s without a p95 is bridged by a line.
        assert await page.evaluate(WIDEST_STEP) < 3
        assert await page.locator('#chart polyline[data-line="waiting"]').count() >= 2
        assert await page.locator('#chart polyline[data-line="p95_ms"]').count() == 3
        measured = await _contrast(page, "figcaption .key", "#chart text", "#live .muted")
        assert len(measured) >= 10
        poor = [(what, round(ratio, 2)) for what, ratio, _ in measured if ratio < AA]
        assert poor == [], poor
    errors.assert_none()


async def test_the_tiles_agree_and_say_paused_everywhere_while_paused(
    gateway: GatewayFactory, redis_client: aioredis.Redis, shots: Shots
) -> None:
    errors = PageErrors()
    async with gateway(rate=3.0) as gw, chromium() as browser:
        queue = Queue(redis_client, make_settings("redis://unused").line())
        await queue.govern(None, 1.5, "67% of admitted students came", time.time())
        _, page = await new_page(browser, errors)
        await log_in(page, gw.url)
        await live_updates(page)
        await expect(tile(page, "noshow_factor")).to_have_text("1.5")
        await expect(tile(page, "target_rate")).to_have_text("3")
        await expect(tile(page, "rate")).to_have_text("3")
        await expect(tile(page, "admission_rate")).to_have_text("4.5")
        tiles = page.locator("#live .tiles > div")
        assert await tiles.count() >= 9
        await expect(page.locator("#live .tiles > div", has_text="paused")).to_have_count(0)
        await shots(page, "running")

        # Paused from another admin's session: this page learns it from live.json.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
            await _pause(other, gw.url)
        count = await tiles.count()
        await expect(page.locator("#live .tiles > div", has_text="paused")).to_have_count(count)
        await expect(page.locator("#mode-badge")).to_have_text("queue · paused")
        await shots(page, "paused")
    errors.assert_none()


async def _pause(s: aiohttp.ClientSession, base: str) -> None:
    from tests.gateway.test_admin import csrf, login, post
    from tests.support.browser_support import ADMIN_PASSWORD

    assert await login(s, base, ADMIN_PASSWORD) == 303
    assert (await post(s, base, "/admin/pause", {"csrf": await csrf(s, base)}))[0] == 303

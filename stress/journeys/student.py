"""A simulated student's journey, request by request, as the real clients make it.

Through the waiting room a *browser* student loads ``/``, and while it shows the
progress page polls exactly as ``static/waitroom.js`` does: ``/queue/state`` while
far from the front (computing its own place and estimate), ``/status`` when near,
waiting the interval each answer asks for with the page's jitter, reloading on its
turn or when the line's epoch changes, backing off 10 s after an error (and before
a scheduled release, counting down first). An *app*
student uses the JSON interface (README, "JSON clients"): ``GET /`` and ``/status``
with ``Accept: application/json``, honouring ``retry_after_s``. Once admitted, both
submit the roll number and date of birth of a real candidate of the sample data and
check that the marksheet returned is that candidate's. Each student keeps one
connection and arrives from an address of its own (``X-Forwarded-For``, through the
trusted loopback proxy), so the gateway's per-client limits count students.

Without the waiting room (``direct``) the same students go straight to the lookup
backend. Whoever gets an error or a timeout tries again after a moment's thought,
as a student on result day does, until their patience runs out.
"""

from __future__ import annotations

import asyncio
import html
import json
import random
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from stress.harness.httpclient import Browser, HttpError, Response, client_address
from stress.harness.record import Recorder, Student
from stress.harness.stack import Target
from waitroom.lookup import sample

HTML = {"Accept": "text/html,application/xhtml+xml"}
JSON = {"Accept": "application/json"}
FORM = {**HTML, "Content-Type": "application/x-www-form-urlencoded"}
JSON_POST = {**JSON, "Content-Type": "application/json"}
_ATTR = {
    name: re.compile(rf'data-{name}="([^"]*)"'.encode())
    for name in ("position", "epoch", "retry", "release")
}
# Pages a browser stays on: the progress page, the pre-queue, the lookup form.
_PAGES = (b"data-position", b"data-release", b'name="roll"')


@dataclass(frozen=True)
class Behaviour:
    think_s: tuple[float, float] = (0.0, 1.0)  # between a student's own actions
    patience_s: float = 120.0  # of failures in a row, before a student gives up
    timeout_s: float = 30.0  # a request unanswered this long has failed
    app_share: float = 0.25  # JSON clients; the rest are browsers
    abandon_share: float = 0.05  # leave the line before their turn
    abandon_after_s: tuple[float, float] = (5.0, 120.0)
    impatient_share: float = 0.1  # reload the page now and then while waiting
    refresh_every_s: tuple[float, float] = (5.0, 20.0)


class _GaveUp(Exception):
    pass


class Journey:
    """Runs students against one target, recording into one recorder."""

    def __init__(
        self, target: Target, behaviour: Behaviour, recorder: Recorder, seed: int, rng_seed: int
    ) -> None:
        self.target = target
        self.behaviour = behaviour
        self.rec = recorder
        self.seed = seed
        self.rng = random.Random(rng_seed)

    async def run(self, st: Student) -> None:
        browser = Browser(
            self.target.host, self.target.port, self.behaviour.timeout_s, client_address(st.id)
        )
        try:
            if self.target.name == "direct":
                await self._direct(st, browser)
            elif st.kind == "app":
                await self._app(st, browser)
            else:
                await self._browser(st, browser)
        except _GaveUp:
            st.outcome = "gave-up"
        finally:
            browser.close()

    # -- plumbing -----------------------------------------------------------------

    async def _send(
        self,
        st: Student,
        b: Browser,
        route: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None = None,
    ) -> Response | None:
        sent = self.rec.now()
        try:
            r = await b.request("GET" if body is None else "POST", path, headers, body or b"")
        except HttpError as exc:
            self.rec.error(st, route, exc.kind)
            return None
        if not self.rec.answer(st, route, sent, r.status, "retry-after" in r.headers):
            st.failing_since = None
        return r

    async def _think(self) -> None:
        await asyncio.sleep(self.rng.uniform(*self.behaviour.think_s))

    async def _after_failure(self, st: Student, r: Response | None) -> None:
        """Wait before trying again: the server's Retry-After, else a moment's thought.

        Patience is for failures in a row: a student who waited in line for an hour
        still tries a few times when the lookup fails.
        """
        now = self.rec.now()
        if st.failing_since is None:
            st.failing_since = now
        elif now - st.failing_since > self.behaviour.patience_s:
            raise _GaveUp
        if r is not None and "retry-after" in r.headers:
            await asyncio.sleep(r.retry_after(5.0))
        else:
            await self._think()

    def _shown(self, st: Student, eta: float | None, low: float, high: float) -> None:
        if st.eta_s is None and eta is not None:
            st.eta_s, st.eta_range_s, st.eta_shown_at = eta, (low, high), self.rec.now()

    # -- the waiting room, as a browser ---------------------------------------------

    async def _load(self, st: Student, b: Browser) -> Response:
        """``GET /`` until it is the progress page or the lookup form."""
        while True:
            sent = self.rec.now()
            r = await self._send(st, b, "GET /", "/", HTML)
            if r is not None and r.status == 200 and any(m in r.body for m in _PAGES):
                if st.join_done is None:
                    st.join_sent, st.join_done = sent, self.rec.now()
                return r
            await self._after_failure(st, r)

    async def _browser(self, st: Student, b: Browser) -> None:
        page = await self._load(st, b)
        while b'name="roll"' not in page.body:
            found = await self._wait_on_page(st, b, page)
            if found is None:
                return
            page = found
        st.admitted_at = self.rec.now()
        await self._submit_form(st, b)

    def _leave_at(self, st: Student) -> float | None:
        if st.abandons_after is None or st.join_done is None:
            return None
        return st.join_done + st.abandons_after

    async def _wait_on_page(self, st: Student, b: Browser, page: Response) -> Response | None:
        """What waitroom.js does; returns the page after a reload, None on abandoning."""
        attrs = {k: rx.search(page.body) for k, rx in _ATTR.items()}
        if attrs["release"] is not None:
            return await self._prequeue(st, b, int(attrs["release"].group(1)))
        if attrs["position"] is None or attrs["epoch"] is None:
            await self._after_failure(st, None)
            return await self._load(st, b)
        position = int(attrs["position"].group(1))
        epoch = attrs["epoch"].group(1).decode()
        retry = attrs["retry"]
        st.position = position
        st.positions_seen.add(position)
        rate, ahead = 1.0, float(position)
        delay = float(retry.group(1)) if retry else 5.0
        refresh_at = (
            self.rec.now() + self.rng.uniform(*self.behaviour.refresh_every_s)
            if st.impatient
            else None
        )
        while True:
            wait = max(1.0, delay) * self.rng.uniform(0.8, 1.2)
            now = self.rec.now()
            leave_at = self._leave_at(st)
            if leave_at is not None and now + wait >= leave_at:
                await asyncio.sleep(max(0.0, leave_at - now))
                st.outcome = "abandoned"
                return None
            if refresh_at is not None and now + wait >= refresh_at:
                await asyncio.sleep(max(0.0, refresh_at - now))
                return await self._load(st, b)  # F5: the ticket cookie keeps the place
            await asyncio.sleep(wait)
            near = ahead / max(rate, 0.001) < 30 or ahead < 20
            if near:
                r = await self._send(st, b, "GET /status", "/status", JSON)
                j = _json(r)
                if j is None:
                    delay = 10.0
                    continue
                state = j.get("state")
                if state in ("ready", "admitted"):
                    return await self._load(st, b)
                if state != "waiting":
                    delay = float(j.get("retry_after_s") or 5)
                    continue
                ahead = float(j["ahead"])
                eta_range = j.get("eta_range_s")
                if eta_range:
                    self._shown(st, j.get("eta_s"), eta_range[0], eta_range[1])
                delay = float(j["retry_after_s"])
            else:
                r = await self._send(st, b, "GET /queue/state", "/queue/state", JSON)
                j = _json(r)
                if j is None or not isinstance(j.get("frontier"), int):
                    delay = 10.0
                    continue
                if j["epoch"] != epoch:
                    return await self._load(st, b)
                # A paused line reports rate 0: the page paces its polls on the last
                # real rate and looks again in 5 s.
                if j["rate"] > 0:
                    rate = float(j["rate"])
                ahead = max(0.0, position - j["frontier"] - 1.0)
                if position <= j["frontier"]:
                    return await self._load(st, b)
                if j["rate"] > 0 and not j["paused"]:
                    s = (ahead + 1) / j["rate"]
                    self._shown(st, s * 1.05, s * 0.9, s * 1.2)  # the page shows 0.9s-1.2s
                wait = ahead / max(rate, 0.001) / 4
                longest = float(j.get("poll_max_s") or 60.0)
                delay = 5.0 if j["paused"] else min(longest, max(2.0, wait))

    async def _prequeue(self, st: Student, b: Browser, release_at_ms: int) -> Response:
        """Before a scheduled release: count down, then ask ``/status`` (a few seconds
        apart, spread) until the place is drawn, and reload. The page's watch of a
        moved release (``/queue/state`` now and then) is left out: a moved release
        is answered by ``/status`` too.
        """
        while True:
            left = release_at_ms / 1000 - time.time()
            await asyncio.sleep(max(0.0, left) + self.rng.uniform(1.0, 5.0))
            while True:
                r = await self._send(st, b, "GET /status", "/status", JSON)
                j = _json(r)
                if j is None:
                    await asyncio.sleep(10 * self.rng.uniform(0.8, 1.2))
                    continue
                if j.get("state") != "prequeue":
                    return await self._load(st, b)
                release_at_ms = int(j.get("release_at_ms") or release_at_ms)
                if release_at_ms / 1000 - time.time() > 2:
                    break  # the release was moved: count down again
                delay = min(float(j.get("retry_after_s") or 5), 5.0)
                await asyncio.sleep(max(1.0, delay) * self.rng.uniform(0.8, 1.2))

    async def _submit_form(self, st: Student, b: Browser) -> None:
        sheet = sample.candidate(self.seed, st.candidate)
        body = urlencode({"roll": sheet.roll, "dob": sheet.dob.isoformat()}).encode()
        await self._think()
        while True:
            r = await self._send(st, b, "POST /result", "/result", FORM, body)
            if r is not None and r.status in (200, 404):
                marks = (f"<dd>{sheet.roll}</dd>", f"<dd>{sheet.name}</dd>")
                # Unescaped: Jinja writes an apostrophe (D'SOUZA) as &#39;.
                text = html.unescape(r.body.decode("utf-8", "replace"))
                ok = r.status == 200 and all(m in text for m in marks)
                self._finish(st, ok)
                return
            await self._after_failure(st, r)

    def _finish(self, st: Student, ok: bool) -> None:
        st.result_at = self.rec.now()
        st.outcome = "result" if ok else "wrong-result"

    # -- the waiting room, as an app (JSON) -----------------------------------------

    async def _app(self, st: Student, b: Browser) -> None:
        while True:
            sent = self.rec.now()
            r = await self._send(st, b, "GET / (json)", "/", JSON)
            j = _json(r)
            if j is not None and j.get("state") in ("prequeue", "waiting", "ready", "admitted"):
                break
            await self._after_failure(st, r)
        st.join_sent, st.join_done = sent, self.rec.now()
        while j.get("state") != "admitted":
            if j.get("state") == "waiting" and j.get("position"):
                st.position = int(j["position"])
                st.positions_seen.add(st.position)
                if j.get("eta_range_s"):
                    low, high = j["eta_range_s"]
                    self._shown(st, j.get("eta_s"), low, high)
            delay = float(j.get("retry_after_s") or 5)
            leave_at = self._leave_at(st)
            if j.get("state") != "ready":
                now = self.rec.now()
                if leave_at is not None and now + delay >= leave_at:
                    await asyncio.sleep(max(0.0, leave_at - now))
                    st.outcome = "abandoned"
                    return
                await asyncio.sleep(delay)
            if j.get("state") == "ready":  # call again: GET / trades the ticket for a pass
                r = await self._send(st, b, "GET / (json)", "/", JSON)
            else:
                r = await self._send(st, b, "GET /status", "/status", JSON)
            answer = _json(r)
            if answer is None:
                await self._after_failure(st, r)
                continue
            j = answer
        st.admitted_at = self.rec.now()
        await self._submit_api(st, b)

    async def _submit_api(self, st: Student, b: Browser) -> None:
        sheet = sample.candidate(self.seed, st.candidate)
        body = json.dumps({"roll": sheet.roll, "dob": sheet.dob.isoformat()}).encode()
        expected = sheet.to_json()
        await self._think()
        while True:
            r = await self._send(st, b, "POST /api/result", "/api/result", JSON_POST, body)
            if r is not None and r.status in (200, 404):
                self._finish(st, r.status == 200 and r.body == expected)
                return
            await self._after_failure(st, r)

    # -- no waiting room ------------------------------------------------------------

    async def _direct(self, st: Student, b: Browser) -> None:
        st.join_sent = self.rec.now()
        if st.kind == "browser":
            while True:
                r = await self._send(st, b, "GET /", "/", HTML)
                if r is not None and r.status == 200 and b'name="roll"' in r.body:
                    break
                await self._after_failure(st, r)
            st.join_done = st.admitted_at = self.rec.now()
            await self._submit_form(st, b)
        else:
            st.join_done = st.admitted_at = self.rec.now()
            await self._submit_api(st, b)


def _json(r: Response | None) -> dict[str, Any] | None:
    """The JSON object of a 2xx answer (fetch's ``r.ok`` plus 202), else None."""
    if r is None or not 200 <= r.status < 300:
        return None
    try:
        value = json.loads(r.body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

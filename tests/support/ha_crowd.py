"""A crowd over HTTP for the failover tests: students who join, wait, trade their
ticket and look up a result on real gateway processes, and a watcher of the line as
each gateway publishes it; then the promises a failover must keep, checked on what
they saw."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from subprocess import Popen
from typing import Any

import aiohttp

from tests.support.e2e import JSON, candidate_form, student
from tests.support.gateway_processes import start_node, stop_node, wait_up
from waitroom.shared.processes import free_port

POLL_S = 0.25
# A student learns their turn at their next poll; the gateways' views lag a refresh.
ORDER_TOLERANCE_S = POLL_S + 0.35


@dataclass
class Student:
    index: int
    join_node: str
    poll_node: str
    session: aiohttp.ClientSession = field(default_factory=student)
    position: int | None = None
    joined_at: float | None = None
    ready_at: float | None = None
    admitted_at: float | None = None
    looked_up: bool = False
    # A student who was ready and was then shown a place to wait again.
    sent_back: bool = False


@dataclass
class Crowd:
    """Every answer the students got, and the line as each gateway published it."""

    started: float = field(default_factory=time.monotonic)
    answers: list[tuple[float, str, int, Any, dict[str, str]]] = field(default_factory=list)
    failed_joins: int = 0
    line: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    students: list[Student] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.started

    async def ask(
        self, s: Student, method: str, url: str, **kwargs: Any
    ) -> tuple[int, dict[str, Any]]:
        headers = dict(JSON)
        async with s.session.request(method, url, headers=headers, **kwargs) as response:
            text = await response.text()
            body: Any = text
            if "json" in (response.content_type or ""):
                body = await response.json(content_type=None)
            self.answers.append((self.now(), url, response.status, body, dict(response.headers)))
            return response.status, body if isinstance(body, dict) else {"text": body}

    async def journey(self, s: Student, deadline: float) -> None:
        """Join (through ``/status``, which always shows the place), wait, trade, look up."""
        while s.position is None:
            assert time.monotonic() < deadline, f"student {s.index} never got a place"
            code, body = await self.ask(s, "GET", s.join_node + "/status")
            if code in (200, 202) and body.get("position") is not None:
                s.position, s.joined_at = int(body["position"]), self.now()
            else:
                self.failed_joins += 1
                await asyncio.sleep(0.3)
        while s.ready_at is None:
            assert time.monotonic() < deadline, f"student {s.index} at {s.position} stranded"
            code, body = await self.ask(s, "GET", s.poll_node + "/status")
            assert body.get("position") == s.position, (s.index, s.position, body)
            if body.get("state") == "ready":
                s.ready_at = self.now()
            else:
                await asyncio.sleep(POLL_S)
        while s.admitted_at is None:
            assert time.monotonic() < deadline, f"student {s.index} never traded"
            # On the node that said "ready": the other one's view may lag a refresh.
            code, body = await self.ask(s, "GET", s.poll_node + "/")
            if code == 200:
                s.admitted_at = self.now()
            elif code == 202:
                s.sent_back = True
                await asyncio.sleep(POLL_S)
            else:
                await asyncio.sleep(0.3)  # calm 503: asks again
        while not s.looked_up:
            assert time.monotonic() < deadline, f"student {s.index} never got a result"
            code, body = await self.ask(
                s, "POST", s.join_node + "/api/result", json=candidate_form(s.index % 40)
            )
            s.looked_up = code == 200
            if not s.looked_up:
                await asyncio.sleep(0.3)

    async def watch(self, nodes: list[str], stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                for node in nodes:
                    with contextlib.suppress(aiohttp.ClientError):
                        async with session.get(node + "/queue/state") as response:
                            if response.status == 200:
                                self.line.append((self.now(), node, await response.json()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)

    async def close(self) -> None:
        for s in self.students:
            await s.session.close()

    # -- what the students saw ----------------------------------------------------------

    def check_answers(self) -> None:
        """Never a 5xx but the calm 503 that retries by itself, never a traceback."""
        for _, url, code, body, headers in self.answers:
            assert code in (200, 202, 503), (url, code, body)
            assert "Traceback" not in str(body), (url, body)
            if code == 503:
                assert int(headers["Retry-After"]) >= 1, (url, headers)
                assert isinstance(body, dict), (url, body)
                assert body.get("state") in ("unavailable", "busy"), (url, body)

    def check_places(self) -> dict[str, int]:
        """One place per student, none given twice, and every place issued held by a
        student but those whose join was never answered (the arrival asked again)."""
        positions = [s.position for s in self.students if s.position is not None]
        assert len(positions) == len(self.students)
        twice = [p for p, n in Counter(positions).items() if n > 1]
        assert not twice, f"places given twice: {twice}"
        unheld = max(positions) - len(positions)
        assert unheld <= self.failed_joins, (unheld, self.failed_joins)
        return {"places": len(positions), "unheld": unheld, "failed_joins": self.failed_joins}

    def check_order(self) -> int:
        """Nobody is let in before someone ahead of them (beyond the polling delay), and
        nobody who was told it was their turn is sent back to wait."""
        assert not [s.index for s in self.students if s.sent_back], "a ready student sent back"
        ready = sorted((s.position, s.ready_at) for s in self.students if s.position and s.ready_at)
        assert len(ready) == len(self.students), "not everyone got in"
        inversions = 0
        latest = -1.0
        for _, at in ready:
            # Everyone ahead became ready by ``latest``; this one must not be far earlier.
            if at + ORDER_TOLERANCE_S < latest:
                inversions += 1
            latest = max(latest, at)
        return inversions

    def frontier_per_node(self) -> dict[str, list[tuple[float, int, bool]]]:
        out: dict[str, list[tuple[float, int, bool]]] = {}
        for t, node, state in self.line:
            out.setdefault(node, []).append((t, int(state["frontier"]), bool(state["stale"])))
        return out

    def check_frontier_never_moves_back(self) -> None:
        epochs = {state["epoch"] for _, _, state in self.line}
        assert len(epochs) == 1, f"the line started again: {epochs}"
        for node, samples in self.frontier_per_node().items():
            for (t0, f0, _), (t1, f1, _) in itertools.pairwise(samples):
                assert f1 >= f0, f"{node}: frontier {f0} at {t0:.2f} s, {f1} at {t1:.2f} s"

    def frontier_at(self, t: float) -> int:
        """The highest frontier any gateway had published by ``t``."""
        return max((int(s["frontier"]) for at, _, s in self.line if at <= t), default=0)

    def noticed_at(self, after: float) -> float:
        """When a gateway first said the line was stale after ``after``."""
        return next((t for t, _, s in self.line if t > after and s["stale"]), after)

    def resumed_at(self, after: float) -> float | None:
        """When admission resumed after an outage that began at ``after``: the first
        frontier a gateway published past the one shown when it noticed the outage
        (its first "stale" state), so the last ticks before the kill, read a refresh
        late, do not count."""
        noticed = self.noticed_at(after)
        base = self.frontier_at(noticed)
        for t, _, state in self.line:
            if t > noticed and not state["stale"] and int(state["frontier"]) > base:
                return t
        return None

    def check_no_burst(self, before: float, start: float, rate: float) -> float:
        """From ``start`` on, admissions past the frontier shown at ``before`` keep to
        the rate: one second's credit at most as a burst. The highest excess (people)."""
        base = self.frontier_at(before)
        worst = 0.0
        for t, _, state in self.line:
            if t > start:
                excess = int(state["frontier"]) - base - rate * (t - start)
                worst = max(worst, excess)
        assert worst <= rate + 2, f"a burst after the failover: {worst:.1f} over the rate"
        return worst


# -- gateway processes ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway_nodes(envs: list[dict[str, str]]) -> AsyncIterator[dict[int, Popen[bytes]]]:
    """One gateway process per environment, up and answering; stopped cleanly after,
    and none may have logged a traceback."""
    started: dict[int, Popen[bytes]] = {}
    try:
        for env in envs:
            port = free_port()
            started[port] = start_node(port, env)
        for port, process in started.items():
            await asyncio.to_thread(wait_up, port, process)
        yield started
    finally:
        for process in started.values():
            err = stop_node(process)
            at = err.find(b"Traceback")
            assert at < 0, err[max(0, at - 600) : at + 3000].decode(errors="replace")


def lease_holder_node(holder: bytes | None, nodes: dict[int, Popen[bytes]]) -> int | None:
    """Port of the gateway whose worker holds a pacer lease (its id carries the pid)."""
    if holder is None:
        return None
    pid = int(holder.decode().split(":")[1])
    for port, process in nodes.items():
        if pid == process.pid or _parent(pid) == process.pid:
            return port
    return None


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1

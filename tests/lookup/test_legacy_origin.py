"""The legacy origin: ``waitroom lookup serve --capacity``, a real process, real HTTP.

Two origins run for the module, each its own ``waitroom lookup serve`` process:
one whose queue timeout comes first (500s from the backlog, 502s past it; with the
admission check on) and one whose proxy timeout comes first (504s from the backlog;
``--standalone``). Sizes are small so each test takes a second or two; timings are
asserted with room for a noisy 2-core machine, the "never sooner" bounds exactly.
"""

from __future__ import annotations

import asyncio
import html
import os
import secrets
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.lookup_fixtures import SEED, STUDENTS, make_db
from waitroom.cli import main
from waitroom.lookup import sample
from waitroom.lookup.capacity import COUNTERS_PATH
from waitroom.shared.admission import HEADER, AdmissionSigner
from waitroom.shared.processes import free_port, stop_group

# Slack for a busy machine on top of a time the origin promises.
LATE_S = 0.35


@dataclass(frozen=True)
class Origin:
    port: int
    per_s: float
    workers: int
    backlog: int
    queue_timeout_s: float
    proxy_timeout_s: float
    signer: AdmissionSigner | None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def service_s(self) -> float:
        return self.workers / self.per_s

    def headers(self) -> dict[str, str]:
        return {} if self.signer is None else {HEADER: self.signer.sign("cbse-xii", "pass-1")}


# Queue timeout first: a burst of W + B + 8 gets 200s, 500s after 0.5 s, 502s after 0.8 s.
QUEUE_FIRST = {"per_s": 20.0, "workers": 4, "backlog": 12, "queue": 0.5, "proxy": 0.8}
# Proxy timeout first: the backlog's late waiters get 504s after 0.3 s, those past it 502s.
PROXY_FIRST = {"per_s": 20.0, "workers": 2, "backlog": 8, "queue": 5.0, "proxy": 0.3}


def _start(
    db: Path, size: dict[str, float], key: str | None, log: Path
) -> tuple[Origin, subprocess.Popen[bytes]]:
    port = free_port()
    argv = [sys.executable, "-m", "waitroom", "lookup", "serve", "--db", str(db)]
    argv += ["--port", str(port), "--capacity", str(size["per_s"])]
    argv += ["--pool-workers", str(int(size["workers"]))]
    argv += ["--pool-backlog", str(int(size["backlog"]))]
    argv += ["--queue-timeout", str(size["queue"]), "--proxy-timeout", str(size["proxy"])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAITROOM_")}
    if key is None:
        argv.append("--standalone")
    else:
        env.update(WAITROOM_MODE="test", WAITROOM_BACKEND_SECRET=key)
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
    origin = Origin(
        port,
        size["per_s"],
        int(size["workers"]),
        int(size["backlog"]),
        size["queue"],
        size["proxy"],
        None if key is None else AdmissionSigner([key]),
    )
    return origin, process


def _wait_up(origin: Origin, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(log.read_text(errors="replace")[-2000:])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{origin.port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{origin.base} did not come up")


@pytest.fixture(scope="module")
def origins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Origin, Origin]]:
    folder = tmp_path_factory.mktemp("legacy")
    db = make_db(folder)
    logs = folder / "queue-first.log", folder / "proxy-first.log"
    # Both start at once: each process's start-up is most of this file's time.
    queue_first, p1 = _start(db, QUEUE_FIRST, secrets.token_urlsafe(32), logs[0])
    proxy_first, p2 = _start(db, PROXY_FIRST, None, logs[1])
    try:
        _wait_up(queue_first, p1, logs[0])
        _wait_up(proxy_first, p2, logs[1])
        yield queue_first, proxy_first
    finally:
        stop_group(p1)
        stop_group(p2)


@pytest.fixture
def admitted(origins: tuple[Origin, Origin]) -> Origin:
    return origins[0]


@pytest.fixture
def standalone(origins: tuple[Origin, Origin]) -> Origin:
    return origins[1]


@dataclass(frozen=True)
class Answer:
    kind: str
    candidate: int
    status: int
    took_s: float
    body: bytes
    headers: dict[str, str]
    sent_at: float


async def _lookup(
    http: aiohttp.ClientSession, origin: Origin, candidate: int, kind: str = "api"
) -> Answer:
    sheet = sample.candidate(SEED, candidate)
    sent = time.monotonic()
    if kind == "api":
        request = http.post(
            f"{origin.base}/api/result",
            json={"roll": sheet.roll, "dob": sheet.dob.isoformat()},
            headers=origin.headers(),
        )
    else:
        request = http.post(
            f"{origin.base}/result",
            data={"roll": sheet.roll, "dob": sheet.dob.isoformat()},
            headers=origin.headers(),
        )
    async with request as r:
        body = await r.read()
        return Answer(
            kind, candidate, r.status, time.monotonic() - sent, body, dict(r.headers), sent
        )


def _own_marksheet(a: Answer) -> bool:
    sheet = sample.candidate(SEED, a.candidate)
    if a.kind == "api":
        return a.body == sheet.to_json()
    # Unescaped: Jinja writes an apostrophe (D'SOUZA) as &#39;.
    text = html.unescape(a.body.decode())
    return f"<dd>{sheet.roll}</dd>" in text and f"<dd>{sheet.name}</dd>" in text


async def _counters(http: aiohttp.ClientSession, origin: Origin) -> dict[str, Any]:
    async with http.get(f"{origin.base}{COUNTERS_PATH}") as r:
        assert r.status == 200
        counters: dict[str, Any] = await r.json()
        return counters


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    keys = set(before) | set(after)
    changed = {k: after.get(k, 0) - before.get(k, 0) for k in keys}
    return {k: v for k, v in changed.items() if v}


def _statuses(answers: list[Answer]) -> dict[str, int]:
    return {str(k): v for k, v in Counter(a.status for a in answers).items()}


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def test_under_capacity_each_lookup_is_answered_its_own_marksheet_after_the_service_time(
    admitted: Origin,
) -> None:
    origin = admitted
    async with _session() as http:
        before = await _counters(http, origin)
        answers: list[Answer] = []
        for wave in range(2):  # as many at once as there are workers, twice
            answers += await asyncio.gather(
                *(
                    _lookup(http, origin, 10 * wave + i, "api" if i % 2 else "form")
                    for i in range(origin.workers)
                )
            )
        after = await _counters(http, origin)
    assert [a.status for a in answers] == [200] * len(answers)
    assert all(_own_marksheet(a) for a in answers)
    for a in answers:
        assert origin.service_s <= a.took_s < origin.service_s + LATE_S, a
    assert _delta(before["lookups"], after["lookups"]) == {"200": len(answers)}
    assert after["served"] - before["served"] == len(answers)
    assert after["in_service"] == after["backlog"] == after["held"] == 0


async def test_sustained_load_over_capacity_holds_throughput_near_capacity_as_latency_climbs(
    admitted: Origin,
) -> None:
    origin = admitted
    # More students than workers, each sending the next lookup when one is answered:
    # a backlog of users - workers, whose wait stays under the queue timeout.
    users, run_s, settle_s = 10, 1.5, 0.5
    answers: list[Answer] = []
    async with _session() as http:
        before = await _counters(http, origin)
        started = time.monotonic()

        async def student(k: int) -> None:
            n = 0
            while time.monotonic() - started < run_s:
                answers.append(await _lookup(http, origin, (k * 17 + n) % STUDENTS))
                n += 1

        await asyncio.gather(*(student(k) for k in range(users)))
        after = await _counters(http, origin)
    assert {a.status for a in answers} == {200}
    assert all(_own_marksheet(a) for a in answers)
    steady = [a for a in answers if a.sent_at + a.took_s - started >= settle_s]
    done_at = [a.sent_at + a.took_s - started for a in steady]
    rate = len(steady) / (max(done_at) - settle_s)
    assert 0.75 * origin.per_s <= rate <= 1.1 * origin.per_s, rate
    # Unloaded, a lookup takes the service time; with a backlog, it waits its turn too.
    expected_s = users / origin.per_s
    p50 = statistics.median(a.took_s for a in steady)
    assert 2 * origin.service_s <= p50 and 0.8 * expected_s <= p50 <= expected_s + LATE_S, p50
    assert after["backlog_max"] >= users - origin.workers - 1
    assert _delta(before["lookups"], after["lookups"]) == {"200": len(answers)}


async def test_past_the_backlog_the_answers_are_500_and_502_never_sooner_than_their_waits(
    admitted: Origin,
) -> None:
    origin = admitted
    burst = origin.workers + origin.backlog + 8
    async with _session() as http:
        before = await _counters(http, origin)
        answers = await asyncio.gather(*(_lookup(http, origin, i) for i in range(burst)))
        after = await _counters(http, origin)
    by_status = Counter(a.status for a in answers)
    assert set(by_status) == {200, 500, 502}, by_status
    assert by_status[200] >= origin.workers + 1
    for a in answers:
        if a.status == 200:
            assert _own_marksheet(a) and a.took_s >= origin.service_s
        elif a.status == 500:
            assert origin.queue_timeout_s <= a.took_s < origin.queue_timeout_s + LATE_S, a
            assert b"Too many connections" in a.body
        else:
            assert origin.proxy_timeout_s <= a.took_s < origin.proxy_timeout_s + LATE_S, a
            assert b"502 Bad Gateway" in a.body and b"nginx" in a.body
        assert "Retry-After" not in a.headers  # a real site's failure is not a calm one
    # What the origin says it answered is what the students saw.
    assert _delta(before["lookups"], after["lookups"]) == _statuses(answers)
    assert _delta(before["timeouts"], after["timeouts"]) == {
        "queue": by_status[500],
        "backlog_full": by_status[502],
    }
    assert after["served"] - before["served"] == by_status[200]
    assert after["backlog_max"] == origin.backlog
    assert after["held_max"] >= by_status[502] >= 1
    assert after["in_service"] == after["backlog"] == after["held"] == 0


async def test_a_proxy_timeout_shorter_than_the_queue_timeout_answers_504_from_the_backlog(
    standalone: Origin,
) -> None:
    origin = standalone  # no admission header sent: --standalone skips the check
    burst = origin.workers + origin.backlog + 4
    async with _session() as http:
        before = await _counters(http, origin)
        answers = await asyncio.gather(*(_lookup(http, origin, i) for i in range(burst)))
        after = await _counters(http, origin)
    by_status = Counter(a.status for a in answers)
    assert set(by_status) == {200, 502, 504}, by_status
    for a in answers:
        if a.status == 200:
            assert _own_marksheet(a)
        else:
            assert origin.proxy_timeout_s <= a.took_s < origin.proxy_timeout_s + LATE_S, a
            assert f"{a.status} ".encode() in a.body and b"nginx" in a.body
    assert _delta(before["lookups"], after["lookups"]) == _statuses(answers)
    assert _delta(before["timeouts"], after["timeouts"]) == {
        "proxy": by_status[504],
        "backlog_full": by_status[502],
    }


async def test_pages_health_and_counters_do_not_wait_for_a_worker(admitted: Origin) -> None:
    origin = admitted
    async with _session() as http:
        before = await _counters(http, origin)
        burst = [
            asyncio.create_task(_lookup(http, origin, i))
            for i in range(origin.workers + origin.backlog + 2)
        ]
        await asyncio.sleep(origin.service_s / 2)  # every worker busy, the backlog full
        sent = time.monotonic()
        busy = await _counters(http, origin)
        took = {COUNTERS_PATH: time.monotonic() - sent}
        for path in ("/", "/healthz"):
            sent = time.monotonic()
            async with http.get(f"{origin.base}{path}", headers=origin.headers()) as r:
                body = await r.read()
                took[path] = time.monotonic() - sent
                assert r.status == 200
                assert path != "/" or b'name="roll"' in body
        async with http.post(f"{origin.base}{COUNTERS_PATH}") as r:
            assert r.status == 405
        answers = await asyncio.gather(*burst)
        after = await _counters(http, origin)
    assert busy["in_service"] == origin.workers and busy["backlog"] == origin.backlog
    assert busy["held"] == 2
    for path, seconds in took.items():
        assert seconds < origin.service_s, (path, seconds)
    lookups = _statuses(answers)
    assert _delta(before["lookups"], after["lookups"]) == lookups
    assert _delta(before["answered"], after["answered"]) == {**lookups, "200": lookups["200"] + 2}


async def test_a_lookup_without_the_gateways_header_is_refused(admitted: Origin) -> None:
    origin = admitted
    async with _session() as http:
        async with http.post(
            f"{origin.base}/api/result", json={"roll": "1", "dob": "2000-01-01"}
        ) as r:
            assert r.status == 403
            assert (await r.json())["reason"] == "missing"


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--capacity", "0"], "--capacity=0.0"),
        (["--capacity", "inf"], "--capacity=inf"),
        (["--capacity", "10", "--pool-workers", "0"], "--pool-workers=0"),
        (["--capacity", "10", "--pool-backlog", "-1"], "--pool-backlog=-1"),
        (["--capacity", "10", "--queue-timeout", "0"], "--queue-timeout=0.0"),
        (["--capacity", "10", "--proxy-timeout", "-2"], "--proxy-timeout=-2.0"),
        (["--pool-workers", "8"], "--pool-workers=8"),
        (["--queue-timeout", "2"], "--queue-timeout=2.0"),
        (["--capacity", "10", "--workers", "2"], "--workers=2"),
    ],
)
def test_serve_names_the_flag_and_the_bad_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], named: str
) -> None:
    db = tmp_path / "results.sqlite3"  # never opened: the flags are checked first
    assert main(["lookup", "serve", "--db", str(db), "--standalone", *flags]) == 2
    err = capsys.readouterr().err
    assert named in err, err
    if "--capacity" not in flags:
        assert "give --capacity" in err


def test_serve_refuses_a_capacity_that_is_not_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["lookup", "serve", "--db", "x", "--standalone", "--capacity", "lots"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--capacity" in err and "'lots'" in err

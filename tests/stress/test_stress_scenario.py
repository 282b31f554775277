"""A small result-day spike against the real stack, as ``python -m stress spike`` runs it.

Real processes (embedded Redis, the lookup backend, the gateway on Hypercorn),
real HTTP, students that poll as the progress page and the JSON clients do. What
the waiting room promises must hold: no 5xx but deliberate 503s, every student who
stayed got their own marksheet, nobody overtook anybody, and the line moved at
the configured rate. Straight at the legacy origin, the crowd meets its 500s, and
the origin's own counters say what the students saw.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stress.harness import analysis, plots, report
from stress.harness.stack import Stack, sample_db
from stress.journeys import arrivals
from stress.journeys.crowd import Crowd, run_sync
from stress.journeys.student import Behaviour

STUDENTS = 300
RATE = 40.0


@pytest.mark.timeout(120)
def test_a_spike_through_the_waiting_room_keeps_every_promise(tmp_path: Path) -> None:
    db = sample_db(2000, cache=tmp_path)
    behaviour = Behaviour(
        think_s=(0.0, 0.3),
        patience_s=60.0,
        timeout_s=15.0,
        app_share=0.3,
        abandon_share=0.05,
        abandon_after_s=(1.0, 2.0),
        impatient_share=0.2,
        refresh_every_s=(1.0, 3.0),
    )
    crowd = Crowd(
        arrivals=arrivals.spike(STUDENTS, 3.0),
        behaviour=behaviour,
        candidates=2000,
        seed=2026,
        deadline_s=60.0,
        progress=False,
    )
    with Stack(db, waitroom=True, rate=RATE) as target:
        rec, cpu = run_sync(target, crowd)
    s = analysis.summarise(rec, cpu, target, rec.now())

    assert s["bad_5xx"] == {}
    assert s["errors"] == {} and s["timeouts"] == 0
    leavers = [st for st in rec.students if st.outcome == "abandoned"]
    assert leavers, "a line long enough to give up on"
    assert all(st.abandons_after is not None for st in leavers)
    stayed = [st for st in rec.students if st.outcome != "abandoned"]
    assert [st.outcome for st in stayed] == ["result"] * len(stayed)
    assert {st.kind for st in stayed} == {"app", "browser"}
    assert any(st.impatient and st.admitted_at for st in stayed)
    assert s["admission_inversions"] == 0
    assert s["admitted_ahead_of_the_line"] == 0
    assert s["lost_place"] == 0
    assert s["longest_line"] > RATE  # a real line, not students admitted on arrival
    ratio = s["rate"]["ratio"]
    assert ratio is not None and abs(ratio - 1) <= 0.1, s["rate"]
    assert s["eta"]["students"] > STUDENTS / 2
    assert set(s["routes"]) >= {"GET /", "GET /status", "POST /result", "POST /api/result"}

    # The report and the plots are made from these figures.
    timeline = analysis.timeline(rec)
    assert sum(row["arrivals"] for row in timeline) == STUDENTS
    folder = report.write("spike", {"runs": [s]}, "table", out_dir=tmp_path)
    series = plots.Series("spike", timeline, [1.0, 2.0], RATE, STUDENTS)
    pngs = plots.draw([series], folder, "spike")
    assert len(pngs) == 4
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert (folder / "spike.json").exists() and (folder / "spike.md").exists()


@pytest.mark.timeout(120)
def test_a_crowd_straight_at_a_legacy_origin_meets_its_500s_and_its_counters_agree(
    tmp_path: Path,
) -> None:
    db = sample_db(2000, cache=tmp_path)
    behaviour = Behaviour(
        think_s=(0.0, 0.3),
        patience_s=60.0,
        timeout_s=15.0,
        app_share=0.3,
        abandon_share=0.0,
        impatient_share=0.0,
    )
    students = 100
    crowd = Crowd(
        arrivals=arrivals.spike(students, 0.5),
        behaviour=behaviour,
        candidates=2000,
        seed=2026,
        deadline_s=60.0,
        progress=False,
    )
    # 20 lookups a second: 16 workers of 0.8 s; past 3 s in the backlog, a 500.
    stack = Stack(db, waitroom=False, capacity=20.0)
    with stack as target:
        rec, cpu = run_sync(target, crowd)
        counters = stack.origin_counters()
    s = analysis.summarise(rec, cpu, target, rec.now())

    assert counters is not None
    assert [st.outcome for st in rec.students] == ["result"] * students
    lookups = ("POST /result", "POST /api/result")
    seen_500 = sum(n for k, n in rec.bad_5xx.items() if k in {f"{r} 500" for r in lookups})
    assert seen_500 > 0 and seen_500 == sum(rec.bad_5xx.values()), rec.bad_5xx
    assert counters["lookups"] == {"200": students, "500": seen_500}
    assert counters["served"] == students
    assert s["calm_503"] == 0 and s["failure_pct"] > 0
    ok = sum(s["routes"][r]["statuses"].get("2xx", 0) for r in lookups)
    assert ok == students

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest

from tests.lookup.test_lookup_admission import _signed_long_ago
from tests.support.lookup_fixtures import KEYS, SEED, STUDENTS, copy_db, make_db, running_backend
from waitroom.lookup import sample
from waitroom.lookup.app import MAX_BODY_BYTES, NO_MATCH_MESSAGE
from waitroom.lookup.importing.importer import import_csv
from waitroom.shared.admission import HEADER, AdmissionSigner


@pytest.fixture(scope="module")
def master_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_db(tmp_path_factory.mktemp("lookup-db"))


@pytest.fixture
def db(master_db: Path, tmp_path: Path) -> Path:
    return copy_db(master_db, tmp_path)


KNOWN = sample.candidate(SEED, 42)


async def test_json_lookup_returns_the_marksheet(db: Path) -> None:
    async with running_backend(db) as b:
        status, body, headers = await b.api({"roll": KNOWN.roll, "dob": KNOWN.dob.isoformat()})
    assert status == 200
    assert body == KNOWN.to_dict()
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert [s["total"] for s in body["subjects"]] == [s.total for s in KNOWN.subjects]


async def test_html_lookup_shows_the_printable_marksheet(db: Path) -> None:
    async with running_backend(db) as b:
        status, page = await b.form({"roll": KNOWN.roll, "dob": KNOWN.dob.isoformat()})
        # people type dates the Indian way too
        dmy = KNOWN.dob.strftime("%d-%m-%Y")
        status2, page2 = await b.form({"roll": f" {KNOWN.roll} ", "dob": dmy})
    assert status == status2 == 200
    assert page == page2
    assert KNOWN.name in page and KNOWN.mother_name in page and KNOWN.roll in page
    for s in KNOWN.subjects:
        assert s.name in page
        assert f'<td class="num total" data-label="Total">{s.total}</td>' in page
    assert f">{KNOWN.result}</span>" in page
    assert 'id="print" data-print hidden' in page


async def test_form_page_is_accessible_and_relative(db: Path) -> None:
    async with running_backend(db) as b, b.http.get(f"{b.base}/", headers=b.admitted()) as r:
        page = await r.text()
    assert r.status == 200
    assert '<html lang="en">' in page
    assert 'action="result?lang=en"' in page  # relative: the backend may sit under a prefix
    assert '<label for="roll">' in page and '<label for="dob">' in page
    assert 'inputmode="numeric"' in page and 'type="date"' in page
    assert 'autocomplete="bday"' in page
    assert "http" not in page.split("<main")[1]  # no absolute links or external assets


async def test_unknown_roll_and_wrong_dob_look_the_same(db: Path) -> None:
    unknown = sample.roll_of(STUDENTS + 5)
    wrong_dob = KNOWN.dob.replace(day=1 if KNOWN.dob.day != 1 else 2).isoformat()
    async with running_backend(db) as b:
        s1, body1, h1 = await b.api({"roll": unknown, "dob": KNOWN.dob.isoformat()})
        s2, body2, h2 = await b.api({"roll": KNOWN.roll, "dob": wrong_dob})
        f1, page1 = await b.form({"roll": unknown, "dob": "2008-01-01"})
        f2, page2 = await b.form({"roll": KNOWN.roll, "dob": "2008-01-01"})
    assert s1 == s2 == f1 == f2 == 404
    assert body1 == body2 == {"error": "no_match", "message": NO_MATCH_MESSAGE}
    assert h1["Content-Length"] == h2["Content-Length"]
    # The HTML answer differs only by echoing what the user typed.
    assert page1.replace(unknown, "R") == page2.replace(KNOWN.roll, "R")
    assert NO_MATCH_MESSAGE in page1


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"roll": "21A", "dob": "2008-01-01"}, "roll", "digits only"),
        ({"roll": "", "dob": "2008-01-01"}, "roll", "Enter your roll number"),
        ({"roll": "1" * 13, "dob": "2008-01-01"}, "roll", "at most 12 digits"),
        ({"roll": 21000001.5, "dob": "2008-01-01"}, "roll", "string of digits"),
        ({"roll": "21000001", "dob": "2008-02-30"}, "dob", "not a real date"),
        ({"roll": "21000001", "dob": "01-02-2008"}, "dob", "YYYY-MM-DD"),
        ({"roll": "21000001"}, "dob", "YYYY-MM-DD"),
        (["21000001", "2008-01-01"], "body", "JSON object"),
    ],
)
async def test_malformed_json_input_is_a_400_naming_the_field(
    db: Path, body: object, field: str, words: str
) -> None:
    async with running_backend(db) as b:
        status, answer, _ = await b.api(body)
    assert status == 400
    assert answer["field"] == field
    assert words in answer["message"]


async def test_malformed_form_input_marks_the_fields(db: Path) -> None:
    async with running_backend(db) as b:
        status, page = await b.form({"roll": "abc", "dob": "31-02-2008"})
    assert status == 400
    assert 'aria-invalid="true"' in page
    assert 'id="roll-error"' in page and 'id="dob-error"' in page
    assert 'aria-describedby="roll-hint roll-error"' in page
    assert "digits only" in page and "not a real date" in page
    assert 'value="abc"' in page


async def test_http_edge_cases(db: Path) -> None:
    async with running_backend(db) as b:
        h = b.admitted()
        async with b.http.get(f"{b.base}/api/result", headers=h) as r:
            assert r.status == 405
            assert r.headers["Allow"] == "POST"
        async with b.http.put(f"{b.base}/", headers=h) as r:
            assert r.status == 405
        async with b.http.get(f"{b.base}/nope", headers=h) as r:
            assert r.status == 404
        async with b.http.get(f"{b.base}/api/nope", headers=h) as r:
            assert r.status == 404 and (await r.json())["error"] == "not_found"
        big = {"roll": "1", "dob": "x" * (MAX_BODY_BYTES + 10)}
        async with b.http.post(f"{b.base}/api/result", json=big, headers=h) as r:
            assert r.status == 413
        async with b.http.post(f"{b.base}/api/result", data=b"{}", headers=h) as r:
            assert r.status == 415  # not declared as JSON
        hj = {**h, "Content-Type": "application/json"}
        async with b.http.post(f"{b.base}/api/result", data=b"{not json", headers=hj) as r:
            assert r.status == 400
        async with b.http.post(f"{b.base}/api/result", data=b"\xff\xfe", headers=hj) as r:
            assert r.status == 400
        async with b.http.head(f"{b.base}/healthz") as r:
            assert r.status == 200 and await r.read() == b""


async def test_admission_is_required_except_for_healthz(db: Path) -> None:
    body = {"roll": KNOWN.roll, "dob": KNOWN.dob.isoformat()}
    async with running_backend(db) as b:
        async with b.http.get(f"{b.base}/healthz") as r:
            assert (r.status, await r.text()) == (200, "ok")
        status, answer, _ = await b.api(body, headers={})
        assert (status, answer["reason"]) == (403, "missing")
        assert "waiting room" in answer["message"]
        status, answer, _ = await b.api(body, headers={HEADER: "forged.token.here"})
        assert (status, answer["reason"]) == (403, "invalid")
        stale = _signed_long_ago(KEYS[0], 120)
        status, answer, _ = await b.api(body, headers={HEADER: stale})
        assert (status, answer["reason"]) == (403, "expired")
        other = AdmissionSigner(["not-our-key"]).sign("r", "p")
        assert (await b.api(body, headers={HEADER: other}))[0] == 403
        old_key = AdmissionSigner([KEYS[1]]).sign("r", "p")  # rotation: old key still listed
        assert (await b.api(body, headers={HEADER: old_key}))[0] == 200
        assert (await b.api(body))[0] == 200
        async with b.http.get(f"{b.base}/") as r:
            assert r.status == 403
            assert "waiting room" in await r.text()
        status, _ = await b.form({"roll": KNOWN.roll, "dob": "2008-01-01"}, headers={})
        assert status == 403


async def test_standalone_needs_no_admission(db: Path) -> None:
    async with running_backend(db, standalone=True) as b:
        status, body, _ = await b.api(
            {"roll": KNOWN.roll, "dob": KNOWN.dob.isoformat()}, headers={}
        )
    assert status == 200 and body["roll"] == KNOWN.roll


async def test_running_backend_picks_up_a_new_import(db: Path, tmp_path: Path) -> None:
    new_seed = SEED + 1
    newcomer = sample.candidate(new_seed, STUDENTS + 10)
    src = tmp_path / "new.csv"
    sample.write_csv(src, STUDENTS + 20, new_seed)
    async with running_backend(db) as b:
        query = {"roll": newcomer.roll, "dob": newcomer.dob.isoformat()}
        assert (await b.api(query))[0] == 404
        await asyncio.to_thread(import_csv, src, db)
        deadline = time.monotonic() + 5
        status = 404
        while status != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            status, body, _ = await b.api(query)
        assert status == 200
        assert body == newcomer.to_dict()


async def test_a_failing_store_gives_a_calm_503_not_a_500(db: Path) -> None:
    async with running_backend(db) as b:
        b.app.store.close()  # the real store breaks underneath the running app
        status, body, headers = await b.api({"roll": KNOWN.roll, "dob": KNOWN.dob.isoformat()})
        assert (status, body["error"]) == (503, "unavailable")
        assert headers["Retry-After"] == "5"
        status, page = await b.form({"roll": KNOWN.roll, "dob": KNOWN.dob.isoformat()})
        assert status == 503
        assert "Traceback" not in page and "try again" in page


async def test_healthz_is_constant(db: Path) -> None:
    async with running_backend(db) as b, aiohttp.ClientSession() as s:
        async with s.get(f"{b.base}/healthz") as r:
            assert await r.read() == b"ok"
            assert json.dumps(dict(r.headers)).count("no-store") == 1

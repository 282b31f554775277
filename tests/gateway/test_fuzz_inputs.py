"""Hypothesis-driven fuzzing of every input: the lookup backend's form and JSON API, the
gateway's routes and headers over real sockets, and the CSV importer.

Never a 500, never a traceback, never an unexpected exception hidden behind a calm
503 (the logs are checked for one), never a partial import. Example counts are
modest so the suite stays fast (WAITROOM_TEST_FUZZ_SCALE multiplies them); each run
draws new examples.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.e2e import student, wait_for_credit
from tests.support.gateway_support import BACKEND_KEYS, make_settings
from tests.support.servers import serving
from waitroom.gateway.app import create_app
from waitroom.lookup import sample
from waitroom.lookup.app import LookupApp
from waitroom.lookup.app import create_app as create_backend
from waitroom.lookup.errors import ImportFailed, ImportRejected
from waitroom.lookup.importing.csvformat import COLUMNS, row_of
from waitroom.lookup.importing.importer import import_csv
from waitroom.lookup.store import ResultStore
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE
from waitroom.shared.admission import HEADER_BYTES, AdmissionSigner

# WAITROOM_TEST_FUZZ_SCALE=20 runs twenty times the examples, for a deeper search.
SCALE = int(os.environ.get("WAITROOM_TEST_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=120 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# -- strategies ----------------------------------------------------------------------------

methods = st.one_of(
    st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"]),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10),
)
known_paths = st.sampled_from(
    [
        *("/", "/result", "/api/result", "/status", "/queue/state", "/healthz", "/readyz"),
        *(
            "/api/",
            "/api/result/",
            "/static/",
            "/static/waitroom.js",
            "//",
            "/result/../api/result",
        ),
    ]
)
paths = st.one_of(
    known_paths,
    known_paths.flatmap(lambda p: st.text(max_size=20).map(lambda t: p + quote(t, safe="/"))),
    st.text(min_size=0, max_size=40).map(lambda t: "/" + quote(t, safe="/;=")),
    st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"),
        max_size=40,
    ).map(lambda t: "/" + t),
)
content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/x-www-form-urlencoded",
            "APPLICATION/X-WWW-FORM-URLENCODED; charset=latin-1",
            "multipart/form-data; boundary=xyz",
            "text/plain",
            "",
        ]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
lookup_fields = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["21000001", "2007-03-12", "12-03-2007", "0", "9" * 13, "2008-02-30"]),
    json_values,
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["json object", "json any", "form", "bytes", "empty", "big"]))
    if kind == "json object":
        data = draw(st.dictionaries(st.sampled_from(["roll", "dob", "x"]), lookup_fields))
        return json.dumps(data).encode()
    if kind == "json any":
        return json.dumps(draw(json_values)).encode()
    if kind == "form":
        data = draw(
            st.dictionaries(st.sampled_from(["roll", "dob", "x", ""]), st.text(max_size=30))
        )
        return urlencode(data).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "big":
        return b"roll=" + b"1" * draw(st.integers(min_value=4000, max_value=20000))
    return b""


# -- the lookup backend (its ASGI app, in process: fast enough for many examples) -----------


async def _call(
    app: LookupApp,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    chunks: int,
) -> tuple[int, dict[bytes, bytes], bytes]:
    size = max(1, len(body) // chunks + 1)
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages: Iterator[dict[str, Any]] = iter(
        [
            {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
            for i, part in enumerate(parts)
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers,
        "query_string": b"",
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent[0]["type"] == "http.response.start"
    return (
        sent[0]["status"],
        dict(sent[0]["headers"]),
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


@pytest.fixture
def backend_app(results_db: Path) -> Iterator[LookupApp]:
    app = create_backend(results_db, admission_keys=BACKEND_KEYS)
    yield app
    app.store.close()


@FUZZ
@given(
    method=methods,
    path=st.one_of(known_paths, paths),
    admission=st.sampled_from(["valid", "missing", "garbage", "foreign"]),
    garbage=st.text(max_size=600),
    content_type=content_types,
    length=st.sampled_from(["right", "absent", "wrong", "garbage", "huge"]),
    body=bodies(),
    chunks=st.integers(min_value=1, max_value=4),
)
async def test_the_lookup_backend_answers_anything_calmly(
    backend_app: LookupApp,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    admission: str,
    garbage: str,
    content_type: str,
    length: str,
    body: bytes,
    chunks: int,
) -> None:
    headers: list[tuple[bytes, bytes]] = []
    if admission == "valid":
        headers.append((HEADER_BYTES, AdmissionSigner(BACKEND_KEYS).sign("results", "p").encode()))
    elif admission == "garbage":
        headers.append((HEADER_BYTES, garbage.encode("utf-8", "replace")))
    elif admission == "foreign":
        headers.append((HEADER_BYTES, AdmissionSigner(["another-key-123"]).sign("r", "p").encode()))
    if content_type:
        headers.append((b"content-type", content_type.encode()))
    declared = {
        "right": str(len(body)),
        "wrong": str(max(0, len(body) - 3)),
        "garbage": "ten",
        "huge": "99999999999999999999",
    }.get(length)
    if declared is not None:
        headers.append((b"content-length", declared.encode()))
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        status, out_headers, out = await _call(backend_app, method, path, headers, body, chunks)
    assert not caplog.records, [r.getMessage() for r in caplog.records]
    assert status in {200, 400, 403, 404, 405, 413, 415}, (status, out[:300])
    assert b"Traceback" not in out
    if method != "HEAD":
        assert int(out_headers[b"content-length"]) == len(out)
    if path.startswith("/api/") and status != 200 and method != "HEAD":
        answer = json.loads(out)
        assert answer["error"] and answer["message"]
    if status == 400 and path == "/api/result":
        assert json.loads(out)["field"] in ("roll", "dob", "body")


# -- the gateway, over real sockets --------------------------------------------------------


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        # Not half-closing: Hypercorn takes EOF as the client leaving, and answers nothing.
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


@pytest.fixture
async def gateway_and_tokens(results_db: Path, redis_url: str, redis_sync: Any) -> Any:
    async with serving(create_backend(results_db, admission_keys=BACKEND_KEYS)) as backend:
        settings_ = make_settings(redis_url, rate=20.0, backend_url=backend.url, join_limit=0)
        async with serving(create_app(settings_)) as gw:
            await wait_for_credit(gw.url)
            async with student() as s:  # a real pass and a real waiting ticket
                async with s.get(gw.url + "/") as response:
                    await response.read()
                admitted = {c.key: c.value for c in s.cookie_jar}
            async with student() as s:
                await asyncio.sleep(0)
                for _ in range(40):  # use up the credit so the next one waits
                    async with s.get(gw.url + "/", headers={"Accept": "application/json"}) as r:
                        await r.read()
                    if TICKET_COOKIE in {c.key for c in s.cookie_jar}:
                        break
                    s.cookie_jar.clear()
                waiting = {c.key: c.value for c in s.cookie_jar}
            yield gw, admitted[PASS_COOKIE], waiting.get(TICKET_COOKIE, "")


def _mangle(token: str, how: int) -> str:
    if not token or how == 0:
        return token
    if how == 1:
        return token[: len(token) // 2]
    if how == 2:
        return token[:-3] + "AAA"
    return token + ";" + token


@FUZZ
@given(
    # Weighted towards requests the app itself answers, not the HTTP server's 400s.
    method=st.one_of(st.sampled_from(["GET", "POST"] * 3), methods),
    path=st.one_of(known_paths, known_paths, paths),
    query=st.one_of(
        st.just(""),
        st.sampled_from(["?lang=hi", "?lang=xx"]),
        st.text(max_size=20).map(lambda t: "?" + quote(t, safe="=&")),
    ),
    ticket=st.sampled_from(["none", "valid", "mangled", "garbage"]),
    pass_=st.sampled_from(["none", "valid", "mangled", "garbage"]),
    how=st.integers(min_value=0, max_value=3),
    garbage=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200),
    accept=st.one_of(
        st.sampled_from(["application/json", "text/html", "*/*", "application/json, text/html"]),
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    ),
    language=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30),
    content_type=content_types,
    # Mostly framed right, so most requests reach the app rather than the server's 400.
    length=st.sampled_from(["right"] * 6 + ["absent", "short", "garbage", "two"]),
    body=bodies(),
    forwarded=st.one_of(
        st.just(""), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
    ),
)
async def test_the_gateway_answers_anything_calmly(
    gateway_and_tokens: Any,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    query: str,
    ticket: str,
    pass_: str,
    how: int,
    garbage: str,
    accept: str,
    language: str,
    content_type: str,
    length: str,
    body: bytes,
    forwarded: str,
) -> None:
    gw, pass_token, ticket_token = gateway_and_tokens
    cookies = []
    for name, choice, token in (
        (TICKET_COOKIE, ticket, ticket_token),
        (PASS_COOKIE, pass_, pass_token),
    ):
        if choice == "valid":
            cookies.append(f"{name}={token}")
        elif choice == "mangled":
            cookies.append(f"{name}={_mangle(token, how or 1)}")
        elif choice == "garbage":
            cookies.append(f"{name}={garbage}")
    lines = [f"{method} {path}{query} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if cookies:
        lines.append("Cookie: " + "; ".join(cookies))
    if accept:
        lines.append(f"Accept: {accept}")
    if language:
        lines.append(f"Accept-Language: {language}")
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if forwarded:
        lines.append(f"X-Forwarded-For: {forwarded}")
    declared = {
        "right": [str(len(body))],
        "short": [str(max(0, len(body) - 5))],
        "garbage": ["-1"],
        "two": [str(len(body)), str(len(body) + 1)],
    }.get(length, [])
    lines.extend(f"Content-Length: {value}" for value in declared)
    if not declared:
        body = b""  # unframed bytes would only be a second, malformed request
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        raw = await _raw(gw.port, request)
    problems = [r.getMessage() for r in caplog.records if r.name.startswith(("waitroom", "lookup"))]
    assert not problems, problems
    assert b"Traceback" not in raw
    assert _STATUS_LINE.match(raw), (request[:300], raw[:300])
    for match in _STATUS_LINE.finditer(raw):
        code = int(match[1])
        assert code < 500 or code == 503, raw[:500]
        if code == 503:
            assert b"retry-after" in raw.lower(), raw[:500]


# -- the CSV importer ----------------------------------------------------------------------

TEXTS = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20
) | st.sampled_from(
    ["", " ", "AB", "101", "-1", "007", "2008-02-29", "1949-12-31", '"', ",", "\r", "\n"]
)


@st.composite
def damaged_csv(draw: st.DrawFn) -> bytes:
    """A valid file of a few candidates with a handful of things done to it."""
    rows = [list(COLUMNS)] + [row_of(sample.candidate(5, k)) for k in range(4)]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        r = draw(st.integers(min_value=0, max_value=len(rows) - 1))
        c = draw(st.integers(min_value=0, max_value=len(COLUMNS) - 1))
        if c < len(rows[r]):
            rows[r][c] = draw(TEXTS)
    if draw(st.booleans()):
        action = draw(
            st.sampled_from(["drop field", "add field", "drop row", "dup row", "shuffle header"])
        )
        r = draw(st.integers(min_value=1, max_value=len(rows) - 1))
        if action == "drop field":
            rows[r] = rows[r][:-1]
        elif action == "add field":
            rows[r] = [*rows[r], "x"]
        elif action == "drop row":
            del rows[r]
        elif action == "dup row":
            rows.append(list(rows[r]))
        else:
            header = draw(st.permutations(rows[0]))
            rows[0] = list(header)
    out = io.StringIO()
    csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows(rows)
    data = out.getvalue().encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        at = draw(st.integers(min_value=0, max_value=len(data)))
        kind = draw(st.sampled_from(["insert", "delete", "truncate"]))
        if kind == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 30)) :]
        else:
            data = data[:at]
    return data


def _snapshot(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT roll, dob, doc FROM results ORDER BY roll").fetchall()


@pytest.fixture(scope="module")
def old_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[Any, ...]]]:
    folder = tmp_path_factory.mktemp("fuzz-import")
    source = folder / "old.csv"
    sample.write_csv(source, 10, 77)
    db = folder / "results.sqlite3"
    import_csv(source, db)
    return db, _snapshot(db)


@settings(
    max_examples=100 * SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=damaged_csv())
def test_a_damaged_csv_is_imported_whole_or_not_at_all(
    old_results: tuple[Path, list[tuple[Any, ...]]],
    tmp_path_factory: pytest.TempPathFactory,
    data: bytes,
) -> None:
    db, before = old_results
    source = tmp_path_factory.mktemp("upload") / "upload.csv"
    source.write_bytes(data)
    try:
        report = import_csv(source, db)
    except ImportRejected as exc:
        assert exc.total >= 1 and exc.problems
        for problem in exc.problems:
            assert problem.line >= 1 and problem.column and problem.message
        assert "Traceback" not in str(exc)
        assert _snapshot(db) == before  # the old results, untouched
    except ImportFailed:
        raise AssertionError(
            "a readable file in a writable directory cannot fail to import"
        ) from None
    else:
        # A file the checks let through is stored whole, every row readable.
        after = _snapshot(db)
        assert len(after) == report.rows >= 1
        store = ResultStore(db)
        try:
            for roll, dob, doc in after:
                assert store.get(roll) == (dob, doc)
                json.loads(doc)
        finally:
            store.close()
        # Put the old results back for the next example.
        restore = db.parent / "old.csv"
        import_csv(restore, db)
        assert _snapshot(db) == before
    assert not list(db.parent.glob(".results.sqlite3.import-*"))


def test_an_unnamed_header_column_is_named_by_its_place(tmp_path: Path) -> None:
    # Found by the fuzzing above: it was reported as "line 1, column : unknown column".
    source = tmp_path / "unnamed.csv"
    header = ["", *COLUMNS[1:]]
    source.write_text(",".join(header) + "\n", encoding="utf-8")
    with pytest.raises(ImportRejected) as rejected:
        import_csv(source, tmp_path / "results.sqlite3")
    text = str(rejected.value)
    assert "line 1, column #1: header column 1 has no name; name it or delete it" in text
    assert "column exam: required column is missing" in text
    assert "column :" not in text

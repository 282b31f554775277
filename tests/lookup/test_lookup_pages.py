"""The lookup's student pages (issue 11, items 1, 3, 4, 5) over real HTTP.

One look (the waiting page's stylesheet, no inline script or style), the student's
language, and what is left of their turn. The same pages in a real browser:
tests/gateway/test_browser.py.
"""

from __future__ import annotations

import datetime as dt
import re
import string
import zoneinfo
from pathlib import Path

import pytest

from tests.support.lookup_fixtures import SEED, Backend, copy_db, make_db, running_backend
from waitroom.errors import ConfigError
from waitroom.gateway.i18n import MESSAGES
from waitroom.lookup import sample
from waitroom.lookup.app import create_app
from waitroom.lookup.words import LANGUAGES, WORDS, pick_language
from waitroom.shared.assets import Assets, default_static_dir

KNOWN = sample.candidate(SEED, 42)
GOOD = {"roll": KNOWN.roll, "dob": KNOWN.dob.isoformat()}
WRONG = {"roll": KNOWN.roll, "dob": "1999-01-01"}
# 2026-05-13 09:02:00 UTC, 14:32 in India.
EXPIRES = int(dt.datetime(2026, 5, 13, 9, 2, tzinfo=dt.UTC).timestamp())


@pytest.fixture(scope="module")
def master_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_db(tmp_path_factory.mktemp("lookup-pages-db"))


@pytest.fixture
def db(master_db: Path, tmp_path: Path) -> Path:
    return copy_db(master_db, tmp_path)


async def get_form(b: Backend, query: str = "", **headers: str) -> tuple[int, str, str]:
    async with b.http.get(f"{b.base}/{query}", headers=b.admitted(**headers)) as r:
        return r.status, await r.text(), r.headers.get("Content-Language", "")


async def post_form(
    b: Backend, data: dict[str, str], query: str = "", **headers: str
) -> tuple[int, str]:
    async with b.http.post(
        f"{b.base}/result{query}", data=data, headers=b.admitted(**headers)
    ) as r:
        return r.status, await r.text()


def text_of(page: str) -> str:
    """The page's visible words, roughly: tags out, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


# -- the words --------------------------------------------------------------------


def placeholders(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field}


def test_every_key_is_in_every_language_with_the_same_placeholders() -> None:
    assert set(WORDS) == set(LANGUAGES)
    for lang in LANGUAGES:
        assert set(WORDS[lang]) == set(WORDS["en"]), lang
        for key, text in WORDS[lang].items():
            assert text.strip(), (lang, key)
            assert placeholders(text) == placeholders(WORDS["en"][key]), (lang, key)
    # Translated, not copied: the labels a student reads differ between languages.
    for key in ("form_heading", "roll", "dob", "submit", "no_match", "total", "grade"):
        assert WORDS["hi"][key] != WORDS["en"][key], key
    # The switch reads as the waiting page's does.
    for lang in LANGUAGES:
        assert WORDS[lang]["language"] == MESSAGES[lang]["language"]


@pytest.mark.parametrize(
    ("query", "header", "accept", "chosen"),
    [
        (b"", None, None, "en"),
        (b"", None, b"hi-IN,hi;q=0.9,en;q=0.8", "hi"),
        (b"", None, b"fr-FR,en;q=0.5", "en"),
        (b"", b"hi", b"en-US", "hi"),  # the student's choice at the gateway beats the browser
        (b"lang=hi", b"en", b"en", "hi"),  # the switch just clicked beats both
        (b"lang=en", b"hi", b"hi", "en"),
        (b"lang=xx", b"hi", None, "hi"),  # an unknown choice is ignored
        (b"x=1&lang=hi", None, None, "hi"),
    ],
)
def test_language_is_picked_query_then_gateway_then_browser(
    query: bytes, header: bytes | None, accept: bytes | None, chosen: str
) -> None:
    assert pick_language(query, header, accept) == chosen


# -- one look ---------------------------------------------------------------------

INLINE = [
    (re.compile(r"<style", re.I), "an inline <style>"),
    (re.compile(r"\sstyle\s*=", re.I), "a style attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "an inline event handler"),
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "an inline <script>"),
    (re.compile(r"javascript:", re.I), "a javascript: URL"),
]


async def test_pages_use_the_waiting_pages_stylesheet_and_no_inline_code(db: Path) -> None:
    css_url = Assets().url("waitroom.css")  # what the gateway's pages link
    js_url = Assets().url("lookup.js")
    async with running_backend(db) as b:
        pages: dict[str, str] = {}
        for lang in LANGUAGES:
            pages[f"form-{lang}"] = (await get_form(b, f"?lang={lang}"))[1]
            pages[f"marksheet-{lang}"] = (await post_form(b, GOOD, f"?lang={lang}"))[1]
            pages[f"no-match-{lang}"] = (await post_form(b, WRONG, f"?lang={lang}"))[1]
            pages[f"bad-input-{lang}"] = (await post_form(b, {"roll": "x"}, f"?lang={lang}"))[1]
            async with b.http.get(f"{b.base}/nope?lang={lang}", headers=b.admitted()) as r:
                pages[f"not-found-{lang}"] = await r.text()
            async with b.http.get(f"{b.base}/?lang={lang}") as r:  # no admission
                pages[f"not-admitted-{lang}"] = await r.text()
        for name, page in pages.items():
            for pattern, what in INLINE:
                assert not pattern.search(page), f"{name} has {what}"
            assert f'<link rel="stylesheet" href="{css_url}">' in page, name
            assert page.count('rel="stylesheet"') == 1, name
            assert f'<script src="{js_url}" defer></script>' in page, name
            assert '<body class="lookup">' in page, name
        # The print button is wired by the script file, not by an attribute.
        assert "data-print hidden" in pages["marksheet-en"]

        # The backend serves the same files itself, cached for good like the gateway's.
        for url, name, ctype in (
            (css_url, "waitroom.css", "text/css"),
            (js_url, "lookup.js", "text/javascript"),
        ):
            async with b.http.get(b.base + url) as r:  # public: no admission needed
                assert r.status == 200, url
                assert r.headers["Content-Type"].startswith(ctype)
                assert "immutable" in r.headers["Cache-Control"]
                assert await r.read() == (default_static_dir() / name).read_bytes()
                etag = r.headers["ETag"]
            async with b.http.get(b.base + url, headers={"If-None-Match": etag}) as r:
                assert r.status == 304
        async with b.http.get(b.base + "/static/waitroom.0000000000.css") as r:
            assert r.status == 404
        async with b.http.get(f"{b.base}/") as r:  # pages stay private
            assert r.headers["Cache-Control"] == "no-store"
    css = (default_static_dir() / "waitroom.css").read_text()
    assert "prefers-color-scheme:dark" in css
    assert "body.lookup" in css and ".marks" in css


# -- the student's language ------------------------------------------------------------


async def test_hindi_through_form_no_match_and_marksheet(db: Path) -> None:
    hi = WORDS["hi"]
    async with running_backend(db) as b:
        status, form, language = await get_form(b, "?lang=hi")
        assert (status, language) == (200, "hi")
        assert '<html lang="hi">' in form
        for key in ("form_heading", "roll", "dob", "submit", "privacy"):
            assert hi[key] in form, key
        # The choice goes with the form, so the answer is in the same language even
        # when nothing else (no gateway, no cookie) remembers it.
        assert 'action="result?lang=hi"' in form
        assert '<a href="./?lang=en" lang="en">Language: English</a>' in form

        status, sheet = await post_form(b, GOOD, "?lang=hi")
        assert status == 200
        assert '<html lang="hi">' in sheet
        for key in ("candidate", "mother", "father", "school", "theory", "total", "grade"):
            assert hi[key] in sheet, key
        assert hi[f"result_{KNOWN.result}"] in sheet
        # Names as the board uploaded them.
        for name in (KNOWN.name, KNOWN.mother_name, KNOWN.father_name, KNOWN.school_name):
            assert name in sheet
        assert all(s.name in sheet for s in KNOWN.subjects)
        assert "Candidate" not in text_of(sheet) and "Mother's name" not in text_of(sheet)

        status, miss = await post_form(b, WRONG, "?lang=hi")
        assert status == 404 and hi["no_match"] in miss
        status, bad = await post_form(b, {"roll": "12ab", "dob": "31-02-2008"}, "?lang=hi")
        assert status == 400
        assert hi["roll_digits"] in bad and hi["dob_unreal"].format(text="31-02-2008") in bad

        # The gateway's word for the student's choice, then the browser's languages.
        assert '<html lang="hi">' in (await get_form(b, **{"x-waitroom-lang": "hi"}))[1]
        status, sheet = await post_form(b, GOOD, **{"x-waitroom-lang": "hi"})
        assert hi["candidate"] in sheet
        assert '<html lang="hi">' in (await get_form(b, **{"Accept-Language": "hi-IN"}))[1]
        english = (await get_form(b, "?lang=en", **{"x-waitroom-lang": "hi"}))[1]
        assert '<html lang="en">' in english and WORDS["en"]["form_heading"] in english
        assert '<html lang="en">' in (await get_form(b))[1]


# -- what is left of the turn -------------------------------------------------------


def turn_headers(left: int | None, expires: int | None = EXPIRES) -> dict[str, str]:
    headers = {}
    if left is not None:
        headers["x-waitroom-lookups-left"] = str(left)
    if expires is not None:
        headers["x-waitroom-pass-expires"] = str(expires)
    return headers


async def test_form_and_no_match_say_lookups_and_time_left(db: Path) -> None:
    india = dt.datetime.fromtimestamp(EXPIRES, zoneinfo.ZoneInfo("Asia/Kolkata"))
    stamp = f'<time datetime="{india.isoformat()}">14:32</time>'
    assert india.isoformat().endswith("+05:30")
    async with running_backend(db) as b:
        _, form, _ = await get_form(b, **turn_headers(7))
        assert f"You have 7 lookups left, until {stamp}." in form
        assert "used one" not in form

        # A wrong date of birth: the student learns it cost a lookup, and what is left.
        status, miss = await post_form(b, WRONG, **turn_headers(6))
        assert status == 404
        assert (
            f"That attempt used one of your lookups. You have 6 lookups left, until {stamp}."
            in (miss)
        )
        status, miss = await post_form(b, WRONG, **turn_headers(1))
        assert "You have 1 lookup left, until" in miss
        status, miss = await post_form(b, WRONG, **turn_headers(0))
        assert WORDS["en"]["lookups_none"] in miss and '<a href="/">' in miss

        # Input the backend could not read is given back at the gateway: one more left.
        status, bad = await post_form(b, {"roll": "x", "dob": ""}, **turn_headers(4))
        assert status == 400
        assert "You have 5 lookups left" in bad and "used one" not in bad

        # The marksheet tells how many remain for another look-up.
        _, sheet = await post_form(b, GOOD, **turn_headers(3))
        assert f"You have 3 lookups left, until {stamp}." in sheet

        # In Hindi, the same facts.
        _, form, _ = await get_form(b, "?lang=hi", **turn_headers(7))
        assert f"आपके पास 7 खोजें बाकी हैं, {stamp} तक।" in form
        _, miss = await post_form(b, WRONG, "?lang=hi", **turn_headers(6))
        assert WORDS["hi"]["attempt_used"] in miss

        # Only one of the two headers, or a garbled one: what is known, nothing else.
        _, form, _ = await get_form(b, **turn_headers(7, None))
        assert "You have 7 lookups left." in form and "<time" not in form
        _, form, _ = await get_form(b, **turn_headers(None))
        assert f"Your turn lasts until {stamp}." in form
        _, form, _ = await get_form(b, **{"x-waitroom-lookups-left": "many"})
        assert 'id="turn"' not in form

        # Reached directly (no gateway, no headers): nothing about lookups or time.
        for page in (
            (await get_form(b))[1],
            (await post_form(b, WRONG))[1],
            (await post_form(b, GOOD))[1],
        ):
            assert 'id="turn"' not in page
            assert "lookup left" not in page and "lookups left" not in page
            assert "used one" not in page


async def test_the_boards_time_zone_is_a_setting(db: Path) -> None:
    app = create_app(db, admission_keys=None, standalone=True, time_zone="UTC")
    assert app.tz == zoneinfo.ZoneInfo("UTC")
    app.store.close()
    with pytest.raises(ConfigError, match="WAITROOM_TIME_ZONE"):
        create_app(db, admission_keys=None, standalone=True, time_zone="Mars/Olympus")

"""The lookup backend: a plain ASGI callable, no framework.

A framework layer costs at least as much CPU per request as the whole lookup
(Quart: about 0.4 ms a request on this class of machine, ``waitroom.gateway.lean``;
a lookup: about 40 µs of the app's own work, README "Performance", "Lookup
backend"), so routing, body reading and responses are done by hand here. Every
handler returns a :class:`Response`; the one place that sends is
:meth:`LookupApp.__call__`, which also turns any unexpected exception into a calm
503, so a client never sees a 500 or a traceback.

SQLite look-ups run synchronously on the event loop: a primary-key read is tens of
microseconds, less than a hop to a thread pool.

The pages speak the student's language (``waitroom/lookup/words.py``) and wear the waiting
page's stylesheet (``static/waitroom.css``, content-hashed by ``waitroom.shared.assets``),
served from ``/static/`` here too so the backend reached directly looks the same.
No inline script or style: the gateway's CSP allows scripts from the site only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import zoneinfo
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
from markupsafe import Markup, escape

from waitroom.errors import AdmissionError, AdmissionExpired, AdmissionMissing, ConfigError
from waitroom.lookup.store import ResultStore
from waitroom.lookup.words import WORDS, other, pick_language
from waitroom.shared.admission import HEADER, HEADER_BYTES, REFUSED_HEADER_BYTES, AdmissionSigner
from waitroom.shared.assets import IMMUTABLE, Assets
from waitroom.shared.rawasgi import ClientGone, Receive, Scope, Send, read_body

log = logging.getLogger(__name__)


MAX_BODY_BYTES = 4096  # a roll number and a date; anything bigger is not a lookup
HTML = b"text/html; charset=utf-8"
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
# Marksheets are personal: no shared cache may keep them, no browser store them.
NO_STORE = b"no-store"
DEFAULT_TIME_ZONE = "Asia/Kolkata"
# The backend owns its pages' protection: the gateway passes an origin's headers on
# as they are, since it cannot know what a board's own site needs.
_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
]
# What the gateway tells the backend about the student's turn (absent when the
# backend is reached directly): lookups left after this request, and when the pass
# expires (unix seconds).
LANG_HEADER = b"x-waitroom-lang"
LOOKUPS_LEFT_HEADER = b"x-waitroom-lookups-left"
PASS_EXPIRES_HEADER = b"x-waitroom-pass-expires"
_ROLL_RE = re.compile(r"[0-9]{1,12}")
_ISO_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DMY_DATE_RE = re.compile(r"([0-9]{1,2})[-/.]([0-9]{1,2})[-/.]([0-9]{4})")
_SMALL_INT_RE = re.compile(rb"[0-9]{1,12}")

NO_MATCH_MESSAGE = WORDS["en"]["no_match"]
NOT_ADMITTED_MESSAGE = WORDS["en"]["not_admitted"]
EXPIRED_MESSAGE = WORDS["en"]["expired"]


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = HTML
    headers: Sequence[tuple[bytes, bytes]] = ()
    cache_control: bytes = NO_STORE


class BadInput(Exception):
    """A field of the request is malformed; the words (``key``) tell the user what to do."""

    def __init__(self, field: str, key: str, **fmt: str) -> None:
        self.field = field
        self.key = key
        self.fmt = fmt
        super().__init__(f"{field}: {self.message}")

    @property
    def message(self) -> str:
        """In English: the API's messages are for programs and their authors."""
        return self.text("en")

    def text(self, lang: str) -> str:
        return WORDS[lang][self.key].format(**self.fmt)


def _json(
    status: int, obj: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> Response:
    return Response(status, json.dumps(obj).encode(), JSON, headers)


def parse_roll(value: str) -> str:
    roll = value.strip()
    if not roll:
        raise BadInput("roll", "roll_empty")
    if not _ROLL_RE.fullmatch(roll):
        if roll.isdigit():
            raise BadInput("roll", "roll_long")
        raise BadInput("roll", "roll_digits")
    return roll


def parse_dob(value: str, *, lenient: bool) -> str:
    """The date as YYYY-MM-DD. ``lenient`` also takes DD-MM-YYYY as people type it."""
    text = value.strip()
    if not text:
        raise BadInput("dob", "dob_empty")
    try:
        if _ISO_DATE_RE.fullmatch(text):
            return dt.date.fromisoformat(text).isoformat()
        m = _DMY_DATE_RE.fullmatch(text) if lenient else None
        if m:
            return dt.date(int(m[3]), int(m[2]), int(m[1])).isoformat()
    except ValueError:
        raise BadInput("dob", "dob_unreal", text=text) from None
    raise BadInput("dob", "dob_format_lenient" if lenient else "dob_format")


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def language(scope: Scope, headers: Sequence[tuple[bytes, bytes]]) -> str:
    return pick_language(
        scope.get("query_string", b""),
        _header(headers, LANG_HEADER),
        _header(headers, b"accept-language"),
    )


@dataclass(frozen=True, slots=True)
class Turn:
    """What is left of the student's turn, as the gateway counted it."""

    left: int | None
    expires: dt.datetime | None


def read_turn(headers: Sequence[tuple[bytes, bytes]], tz: dt.tzinfo) -> Turn | None:
    """The gateway's turn headers; None without them (or with nothing readable)."""
    left_raw = _header(headers, LOOKUPS_LEFT_HEADER)
    expires_raw = _header(headers, PASS_EXPIRES_HEADER)
    left = int(left_raw) if left_raw and _SMALL_INT_RE.fullmatch(left_raw.strip()) else None
    expires = None
    if expires_raw and _SMALL_INT_RE.fullmatch(expires_raw.strip()):
        try:
            expires = dt.datetime.fromtimestamp(int(expires_raw), tz)
        except (OverflowError, OSError, ValueError):
            expires = None
    if left is None and expires is None:
        return None
    return Turn(left, expires)


def turn_words(turn: Turn | None, lang: str, *, used: bool) -> dict[str, Any] | None:
    """The sentence about the turn, e.g. "You have 7 lookups left, until 14:32."."""
    if turn is None:
        return None
    t = WORDS[lang]
    time = None
    if turn.expires is not None:
        time = Markup('<time datetime="{}">{}</time>').format(
            turn.expires.isoformat(timespec="seconds"), turn.expires.strftime("%H:%M")
        )
    if turn.left == 0:
        text = escape(t["lookups_none"])
    elif turn.left is not None:
        left = (
            t["lookups_left_one"] if turn.left == 1 else t["lookups_left_many"].format(n=turn.left)
        )
        if time is None:
            text = escape(t["left_only"]).format(left=left)
        else:
            text = escape(t["until"]).format(left=left, time=time)
    else:
        text = escape(t["turn_until"]).format(time=time)
    return {"text": text, "used": used and turn.left is not None, "none_left": turn.left == 0}


class LookupApp:
    def __init__(
        self,
        store: ResultStore,
        signer: AdmissionSigner | None,
        templates: jinja2.Environment,
        *,
        assets: Assets | None = None,
        time_zone: str = DEFAULT_TIME_ZONE,
    ) -> None:
        self.store = store
        self.signer = signer
        self.assets = assets or Assets()
        self.tz = _zone(time_zone)
        self._templates = templates
        templates.globals["asset"] = self.assets.url
        # The form without turn headers is the same for everyone: made once per language.
        self._form_pages = {lang: self._form(200, lang, "", "", None, {}).body for lang in WORDS}
        self._routes: dict[str, tuple[tuple[str, ...], Callable[..., Awaitable[Response]]]] = {
            "/": (("GET", "HEAD"), self._get_form),
            "/result": (("POST",), self._post_result),
            "/api/result": (("POST",), self._post_api_result),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(receive, send)
            return
        try:
            response = await self._dispatch(scope, receive)
        except ClientGone:
            return
        except Exception:
            log.exception("lookup failed for %s %s", scope.get("method"), scope.get("path"))
            response = self._unavailable(scope["path"], _safe_language(scope))
        body = response.body
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", response.cache_control),
                    *_COMMON_HEADERS,
                    *response.headers,
                ],
            }
        )
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, scope: Scope, receive: Receive) -> Response:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/healthz":  # the plain route: first, and without admission
            if method in ("GET", "HEAD"):
                return Response(200, b"ok", TEXT)
            return self._not_allowed(path, ("GET", "HEAD"), "en")
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if path.startswith("/static/"):
            # Public, as at the gateway: the stylesheet and script hold nothing personal.
            if method not in ("GET", "HEAD"):
                return self._not_allowed(path, ("GET", "HEAD"), "en")
            return self._static(path[len("/static/") :], headers)
        lang = language(scope, headers)
        route = self._routes.get(path)
        if route is None:
            return self._not_found(path, lang)
        methods, handler = route
        if method not in methods:
            return self._not_allowed(path, methods, lang)
        if self.signer is not None:
            token = None
            for name, value in headers:
                if name == HEADER_BYTES:
                    token = value.decode("latin-1")
                    break
            try:
                self.signer.verify(token)
            except AdmissionError as exc:
                return self._not_admitted(path, exc, lang)
        return await handler(scope, receive, headers, lang)

    def _static(self, name: str, headers: list[tuple[bytes, bytes]]) -> Response:
        asset = self.assets.files.get(name)
        if asset is None:
            return Response(404, b"not found\n", TEXT)
        etag = [(b"etag", asset.etag)]
        if _header(headers, b"if-none-match") == asset.etag:
            return Response(304, b"", asset.content_type, etag, IMMUTABLE)
        return Response(200, asset.body, asset.content_type, etag, IMMUTABLE)

    # -- routes ---------------------------------------------------------------

    async def _get_form(
        self, scope: Scope, receive: Receive, headers: list[tuple[bytes, bytes]], lang: str
    ) -> Response:
        turn = read_turn(headers, self.tz)
        accept = _header(headers, b"accept") or b""
        if b"application/json" in accept and b"text/html" not in accept:
            # A JSON app that reached the front of the line: where its lookup goes.
            # The gateway forwards every request; what the site offers is the site's
            # to say.
            about: dict[str, Any] = {"state": "admitted", "result_url": "/api/result"}
            if turn is not None and turn.left is not None:
                about["lookups_left"] = turn.left
            if turn is not None and turn.expires is not None:
                about["pass_expires_at"] = int(turn.expires.timestamp())
            return _json(200, about)
        if turn is None:
            return Response(200, self._form_pages[lang], headers=_language_header(lang))
        return self._form(200, lang, "", "", None, {}, turn_words(turn, lang, used=False))

    async def _post_result(
        self, scope: Scope, receive: Receive, headers: list[tuple[bytes, bytes]], lang: str
    ) -> Response:
        t = WORDS[lang]
        body = await read_body(receive, headers, MAX_BODY_BYTES)
        if body is None:
            return self._message(413, lang, t["title_too_large"], t["too_large"])
        turn = read_turn(headers, self.tz)
        # The gateway gives back a lookup the backend could not read (400, 415): the
        # count it sent assumed this one used, so one more is left.
        unread = None if turn is None or turn.left is None else Turn(turn.left + 1, turn.expires)
        unread_words = turn_words(unread if unread else turn, lang, used=False)
        if not _content_type_is(headers, b"application/x-www-form-urlencoded"):
            return self._form(415, lang, "", "", t["form_type"], {}, unread_words)
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            return self._form(400, lang, "", "", t["form_unreadable"], {}, unread_words)
        roll_in = fields.get("roll", [""])[0]
        dob_in = fields.get("dob", [""])[0]
        errors: dict[str, str] = {}
        roll = dob = ""
        try:
            roll = parse_roll(roll_in)
        except BadInput as exc:
            errors[exc.field] = exc.text(lang)
        try:
            dob = parse_dob(dob_in, lenient=True)
        except BadInput as exc:
            errors[exc.field] = exc.text(lang)
        if errors:
            return self._form(400, lang, roll_in, dob_in, t["correct_fields"], errors, unread_words)
        doc = self._find(roll, dob)
        if doc is None:
            # A wrong date of birth costs a lookup at the gateway like any other: say so.
            return self._form(
                404, lang, roll, dob, t["no_match"], {}, turn_words(turn, lang, used=True)
            )
        page = self._templates.get_template("marksheet.html").render(
            m=json.loads(doc), turn=turn_words(turn, lang, used=False), **_globals(lang)
        )
        return Response(200, page.encode(), headers=_language_header(lang))

    async def _post_api_result(
        self, scope: Scope, receive: Receive, headers: list[tuple[bytes, bytes]], lang: str
    ) -> Response:
        body = await read_body(receive, headers, MAX_BODY_BYTES)
        if body is None:
            return _json(
                413,
                {"error": "too_large", "message": f"The body is over {MAX_BODY_BYTES} bytes."},
            )
        if not _content_type_is(headers, b"application/json"):
            return _json(
                415,
                {
                    "error": "unsupported_media_type",
                    "message": "Send the body as application/json.",
                },
            )
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            return _bad_json(
                "body",
                'The body must be a JSON object like {"roll": "21000001", "dob": "2008-04-15"}.',
            )
        try:
            roll_raw, dob_raw = data.get("roll"), data.get("dob")
            if isinstance(roll_raw, int) and not isinstance(roll_raw, bool) and roll_raw >= 0:
                roll_raw = str(roll_raw)
            if not isinstance(roll_raw, str):
                raise BadInput("roll", "api_roll_type")
            roll = parse_roll(roll_raw)
            if not isinstance(dob_raw, str):
                raise BadInput("dob", "api_dob_type")
            dob = parse_dob(dob_raw, lenient=False)
        except BadInput as exc:
            return _bad_json(exc.field, exc.message)
        doc = self._find(roll, dob)
        if doc is None:
            return _NO_MATCH_JSON
        return Response(200, doc, JSON)

    # -- helpers --------------------------------------------------------------

    def _find(self, roll: str, dob: str) -> bytes | None:
        """The marksheet JSON, or None for an unknown roll and a wrong date alike."""
        found = self.store.get(roll)
        if found is None or found[0] != dob:
            return None
        return found[1]

    def _form(
        self,
        status: int,
        lang: str,
        roll: str,
        dob: str,
        message: str | None,
        errors: dict[str, str],
        turn: dict[str, Any] | None = None,
    ) -> Response:
        page = self._templates.get_template("form.html").render(
            roll=roll,
            dob=dob,
            message=message,
            field_errors={"roll": errors.get("roll"), "dob": errors.get("dob")},
            turn=turn,
            **_globals(lang),
        )
        return Response(status, page.encode(), headers=_language_header(lang))

    def _message(
        self,
        status: int,
        lang: str,
        title: str,
        message: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        link: str | None = None,
    ) -> Response:
        page = self._templates.get_template("message.html").render(
            title=title,
            message=message,
            link=f"./?lang={lang}" if link is None else link,
            link_text=WORDS[lang]["back_to_form"],
            **_globals(lang),
        )
        return Response(status, page.encode(), HTML, [*headers, *_language_header(lang)])

    def _not_found(self, path: str, lang: str) -> Response:
        if path.startswith("/api/"):
            return _json(404, {"error": "not_found", "message": f"No API route {path}."})
        t = WORDS[lang]
        return self._message(404, lang, t["title_not_found"], t["not_found"])

    def _not_allowed(self, path: str, methods: Sequence[str], lang: str) -> Response:
        allow = [(b"allow", ", ".join(methods).encode())]
        if path.startswith("/api/"):
            text = f"{path} accepts {' or '.join(methods)} only."
            return _json(405, {"error": "method_not_allowed", "message": text}, allow)
        t = WORDS[lang]
        text = t["not_allowed"].format(path=path, methods=t["or"].join(methods))
        return self._message(405, lang, t["title_not_allowed"], text, allow)

    def _not_admitted(self, path: str, exc: AdmissionError, lang: str) -> Response:
        reason = (
            "expired"
            if isinstance(exc, AdmissionExpired)
            else "missing"
            if isinstance(exc, AdmissionMissing)
            else "invalid"
        )
        log.debug("refused %s: %s", path, exc)
        key = "expired" if reason == "expired" else "not_admitted"
        refused = [(REFUSED_HEADER_BYTES, b"admission")]
        if path.startswith("/api/"):
            message = WORDS["en"][key]
            body = {"error": "not_admitted", "reason": reason, "message": message}
            return _json(403, body, refused)
        t = WORDS[lang]
        return self._message(403, lang, t["title_not_admitted"], t[key], refused, link="")

    def _unavailable(self, path: str, lang: str) -> Response:
        retry = [(b"retry-after", b"5")]
        if path.startswith("/api/"):
            message = WORDS["en"]["unavailable"]
            return _json(503, {"error": "unavailable", "message": message}, retry)
        t = WORDS[lang]
        try:
            return self._message(503, lang, t["title_unavailable"], t["unavailable"], retry)
        except Exception:  # even the template failed: answer with plain text
            return Response(503, t["unavailable"].encode(), TEXT, retry)


_NO_MATCH_JSON = _json(404, {"error": "no_match", "message": NO_MATCH_MESSAGE})


def _globals(lang: str) -> dict[str, Any]:
    return {"lang": lang, "t": WORDS[lang], "other_lang": other(lang)}


def _language_header(lang: str) -> list[tuple[bytes, bytes]]:
    return [(b"content-language", lang.encode())]


def _safe_language(scope: Scope) -> str:
    try:
        return language(scope, scope.get("headers", []))
    except Exception:  # the page that says "try again" must not fail on its words
        return "en"


def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            "WAITROOM_TIME_ZONE", name, "not a time zone name such as Asia/Kolkata"
        ) from None


def _bad_json(field: str, message: str) -> Response:
    return _json(400, {"error": "bad_request", "field": field, "message": message})


def _content_type_is(headers: list[tuple[bytes, bytes]], wanted: bytes) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == wanted
    return False


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


def create_app(
    db_path: Path | str,
    *,
    admission_keys: Sequence[str] | None,
    standalone: bool = False,
    max_age_s: int = 30,
    time_zone: str = DEFAULT_TIME_ZONE,
) -> LookupApp:
    """The ASGI app. Without ``standalone`` every route but /healthz needs admission.

    ``time_zone`` is the board's: the hour a pass expires is shown in it.
    """
    keys = [k for k in (admission_keys or ()) if k]
    if not standalone and not keys:
        raise ConfigError(
            "WAITROOM_BACKEND_SECRET",
            "",
            "the backend needs the admission secret shared with the gateway: set "
            "WAITROOM_BACKEND_SECRET or pass --secret (comma-separated keys, newest "
            "first), or pass --standalone for a demo without the waiting room",
        )
    signer = None if standalone else AdmissionSigner(keys, max_age_s)
    return LookupApp(ResultStore(Path(db_path)), signer, templates(), time_zone=time_zone)


__all__ = ["HEADER", "LookupApp", "Response", "create_app"]

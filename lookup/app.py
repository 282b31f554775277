"""The lookup backend: a plain ASGI callable, no framework.

A framework layer costs about as much CPU per request as the whole lookup (see
/work/shared/CONTEXT.md), so routing, body reading and responses are done by hand
here. Every handler returns a :class:`Response`; the one place that sends is
:meth:`LookupApp.__call__`, which also turns any unexpected exception into a calm
503, so a client never sees a 500 or a traceback.

SQLite look-ups run synchronously on the event loop: a primary-key read is tens of
microseconds, less than a hop to a thread pool.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2

from lookup.admission import HEADER, HEADER_BYTES, AdmissionSigner
from lookup.errors import AdmissionError, AdmissionExpired, AdmissionMissing
from lookup.store import ResultStore
from waitroom.errors import ConfigError
from waitroom.rawasgi import ClientGone, Receive, Scope, Send, read_body

log = logging.getLogger(__name__)


MAX_BODY_BYTES = 4096  # a roll number and a date; anything bigger is not a lookup
HTML = b"text/html; charset=utf-8"
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
_COMMON_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # Marksheets are personal: no shared cache may keep them, no browser store them.
    (b"cache-control", b"no-store"),
]
_ROLL_RE = re.compile(r"[0-9]{1,12}")
_ISO_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DMY_DATE_RE = re.compile(r"([0-9]{1,2})[-/.]([0-9]{1,2})[-/.]([0-9]{4})")

NO_MATCH_MESSAGE = (
    "No result matches this roll number and date of birth. "
    "Check both against your admit card and try again."
)
NOT_ADMITTED_MESSAGE = (
    "Please go through the waiting room: open the results page from the board's "
    "website to get your place in line. You will be brought here when it is your turn."
)
EXPIRED_MESSAGE = (
    "Your turn to look up a result has timed out. Please go back to the waiting room "
    "page: it will bring you here again."
)


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = HTML
    headers: Sequence[tuple[bytes, bytes]] = ()


class BadInput(Exception):
    """A field of the request is malformed; the message tells the user what to do."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _json(
    status: int, obj: dict[str, Any], headers: Sequence[tuple[bytes, bytes]] = ()
) -> Response:
    return Response(status, json.dumps(obj).encode(), JSON, headers)


def parse_roll(value: str) -> str:
    roll = value.strip()
    if not roll:
        raise BadInput("roll", "Enter your roll number.")
    if not _ROLL_RE.fullmatch(roll):
        if roll.isdigit():
            raise BadInput("roll", "A roll number has at most 12 digits. Check your admit card.")
        raise BadInput("roll", "A roll number contains digits only, as on your admit card.")
    return roll


def parse_dob(value: str, *, lenient: bool) -> str:
    """The date as YYYY-MM-DD. ``lenient`` also takes DD-MM-YYYY as people type it."""
    text = value.strip()
    if not text:
        raise BadInput("dob", "Enter your date of birth.")
    try:
        if _ISO_DATE_RE.fullmatch(text):
            return dt.date.fromisoformat(text).isoformat()
        m = _DMY_DATE_RE.fullmatch(text) if lenient else None
        if m:
            return dt.date(int(m[3]), int(m[2]), int(m[1])).isoformat()
    except ValueError:
        raise BadInput("dob", f"{text} is not a real date. Check the day and month.") from None
    example = "YYYY-MM-DD or DD-MM-YYYY" if lenient else "YYYY-MM-DD"
    raise BadInput("dob", f"Write your date of birth as {example}, for example 2008-04-15.")


class LookupApp:
    def __init__(
        self, store: ResultStore, signer: AdmissionSigner | None, templates: jinja2.Environment
    ) -> None:
        self.store = store
        self.signer = signer
        self._templates = templates
        self._form_page = self._form(200, "", "", None, {}).body
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
            response = self._unavailable(scope["path"])
        body = response.body
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type),
                    (b"content-length", str(len(body)).encode()),
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
            return self._not_allowed(path, ("GET", "HEAD"))
        route = self._routes.get(path)
        if route is None:
            return self._not_found(path)
        methods, handler = route
        if method not in methods:
            return self._not_allowed(path, methods)
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if self.signer is not None:
            token = None
            for name, value in headers:
                if name == HEADER_BYTES:
                    token = value.decode("latin-1")
                    break
            try:
                self.signer.verify(token)
            except AdmissionError as exc:
                return self._not_admitted(path, exc)
        return await handler(scope, receive, headers)

    # -- routes ---------------------------------------------------------------

    async def _get_form(self, scope: Scope, receive: Receive, headers: Any) -> Response:
        return Response(200, self._form_page)

    async def _post_result(
        self, scope: Scope, receive: Receive, headers: list[tuple[bytes, bytes]]
    ) -> Response:
        body = await read_body(receive, headers, MAX_BODY_BYTES)
        if body is None:
            return self._message(
                413, "Request too large", "The form sent was too large to be a result lookup."
            )
        if not _content_type_is(headers, b"application/x-www-form-urlencoded"):
            return self._form(
                415,
                "",
                "",
                "Send the form from this page (as application/x-www-form-urlencoded).",
                {},
            )
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=10)
        except (UnicodeDecodeError, ValueError):
            return self._form(
                400, "", "", "The form could not be read. Please fill it in again.", {}
            )
        roll_in = fields.get("roll", [""])[0]
        dob_in = fields.get("dob", [""])[0]
        errors: dict[str, str] = {}
        roll = dob = ""
        try:
            roll = parse_roll(roll_in)
        except BadInput as exc:
            errors[exc.field] = exc.message
        try:
            dob = parse_dob(dob_in, lenient=True)
        except BadInput as exc:
            errors[exc.field] = exc.message
        if errors:
            return self._form(400, roll_in, dob_in, "Please correct the marked fields.", errors)
        doc = self._find(roll, dob)
        if doc is None:
            return self._form(404, roll, dob, NO_MATCH_MESSAGE, {})
        page = self._templates.get_template("marksheet.html").render(m=json.loads(doc))
        return Response(200, page.encode())

    async def _post_api_result(
        self, scope: Scope, receive: Receive, headers: list[tuple[bytes, bytes]]
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
                raise BadInput("roll", 'Give "roll" as a string of digits, e.g. "21000001".')
            roll = parse_roll(roll_raw)
            if not isinstance(dob_raw, str):
                raise BadInput("dob", 'Give "dob" as a string "YYYY-MM-DD", e.g. "2008-04-15".')
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
        self, status: int, roll: str, dob: str, message: str | None, errors: dict[str, str]
    ) -> Response:
        page = self._templates.get_template("form.html").render(
            roll=roll,
            dob=dob,
            message=message,
            field_errors={"roll": errors.get("roll"), "dob": errors.get("dob")},
        )
        return Response(status, page.encode())

    def _message(
        self,
        status: int,
        title: str,
        message: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        link: str = "./",
        link_text: str = "Back to the result form",
    ) -> Response:
        page = self._templates.get_template("message.html").render(
            title=title, message=message, link=link, link_text=link_text
        )
        return Response(status, page.encode(), HTML, headers)

    def _not_found(self, path: str) -> Response:
        if path.startswith("/api/"):
            return _json(404, {"error": "not_found", "message": f"No API route {path}."})
        return self._message(404, "Page not found", "There is no page at this address.")

    def _not_allowed(self, path: str, methods: Sequence[str]) -> Response:
        allow = [(b"allow", ", ".join(methods).encode())]
        text = f"{path} accepts {' or '.join(methods)} only."
        if path.startswith("/api/"):
            return _json(405, {"error": "method_not_allowed", "message": text}, allow)
        return self._message(405, "Method not allowed", text, allow)

    def _not_admitted(self, path: str, exc: AdmissionError) -> Response:
        reason = (
            "expired"
            if isinstance(exc, AdmissionExpired)
            else "missing"
            if isinstance(exc, AdmissionMissing)
            else "invalid"
        )
        log.debug("refused %s: %s", path, exc)
        message = EXPIRED_MESSAGE if reason == "expired" else NOT_ADMITTED_MESSAGE
        if path.startswith("/api/"):
            return _json(403, {"error": "not_admitted", "reason": reason, "message": message})
        return self._message(403, "Please use the waiting room", message, link="", link_text="")

    def _unavailable(self, path: str) -> Response:
        retry = [(b"retry-after", b"5")]
        message = "Results are briefly unavailable. Please try again in a few seconds."
        if path.startswith("/api/"):
            return _json(503, {"error": "unavailable", "message": message}, retry)
        try:
            return self._message(503, "Please try again shortly", message, retry)
        except Exception:  # even the template failed: answer with plain text
            return Response(503, message.encode(), TEXT, retry)


_NO_MATCH_JSON = _json(404, {"error": "no_match", "message": NO_MATCH_MESSAGE})


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
) -> LookupApp:
    """The ASGI app. Without ``standalone`` every route but /healthz needs admission."""
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
    return LookupApp(ResultStore(Path(db_path)), signer, templates())


__all__ = ["HEADER", "LookupApp", "Response", "create_app"]

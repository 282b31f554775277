"""The gateway's Quart app: the pages, the line's entry and forwarding.

``create_app(settings)`` builds one app with its own services (Redis client, queue,
cached view, pacer, forwarder); they are opened and closed in ``while_serving``.
The lean layer (``fastpath``) is installed as ``app.asgi_app`` middleware, so the
Quart object itself is the complete ASGI application.

Every route ends in a page or a JSON answer that a student can act on: Redis or
backend faults become calm 503s with Retry-After, bad cookies a new place with a
note that says why, and anything unforeseen the same calm page (never a 500).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from quart import Quart, Response, current_app, request
from werkzeug.exceptions import HTTPException

from waitroom.admin import admin_blueprint
from waitroom.config import Settings
from waitroom.errors import BackendUnavailable, StoreUnavailable
from waitroom.fastpath import (
    BACKEND_FAULT,
    LOOKUP_LIMITED,
    MAX_BODY,
    SECURITY_HEADERS,
    FastPath,
    wants_json,
)
from waitroom.i18n import LANGUAGES, pick_language
from waitroom.limits import LookupVerdict
from waitroom.metrics import CONTENT_TYPE_LATEST, render_metrics
from waitroom.pages import clock, iso
from waitroom.services import Services
from waitroom.standing import Standing, standing
from waitroom.tickets import PASS_COOKIE, TICKET_COOKIE, Ticket, TicketRejected

log = logging.getLogger(__name__)

LANG_COOKIE = "wr_lang"
# The routes that reach the lookup backend once admitted.
FORWARDED = {("GET", "/"), ("POST", "/result"), ("POST", "/api/result")}


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings.from_env()
    app = Quart(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    services = Services.build(settings)
    app.extensions["waitroom"] = services
    app.asgi_app = FastPath(  # type: ignore[method-assign,assignment]
        app.asgi_app,  # type: ignore[arg-type]
        services.view,
        services.signer,
        services.assets,
        services.forwarder,
        services.limits,
    )

    @app.while_serving  # type: ignore[type-var]
    async def lifespan() -> AsyncIterator[None]:
        await services.forwarder.start()
        await services.view.refresh()
        tasks = [
            asyncio.create_task(services.view.run(), name="waitroom-view"),
            asyncio.create_task(services.pacer.run(), name="waitroom-pacer"),
            asyncio.create_task(
                services.stats.run(services.redis, services.queue.keys), name="waitroom-stats"
            ),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await services.forwarder.close()
            await services.redis.aclose()

    app.add_template_filter(clock, "clock")
    app.add_template_filter(iso, "iso")

    app.register_blueprint(admin_blueprint(services))

    @app.context_processor
    def template_globals() -> dict[str, Any]:
        return services.pages.globals_for(_language())

    @app.after_request
    async def headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS:
            response.headers.setdefault(name.decode(), value.decode())
        query_lang = request.args.get("lang")
        if query_lang in LANGUAGES:
            response.set_cookie(
                LANG_COOKIE,
                query_lang,
                max_age=365 * 86400,
                samesite="Lax",
                secure=settings.cookie_secure,
            )
        return response

    @app.route("/", methods=["GET"])
    async def entry() -> Response:
        return await _admit_then_forward(services)

    @app.route("/result", methods=["POST"])
    @app.route("/api/result", methods=["POST"])
    async def result() -> Response:
        return await _admit_then_forward(services)

    @app.route("/status", methods=["GET"])
    async def status() -> Response:
        return await _admit_then_forward(services, json_only=True, forward=False)

    @app.route("/healthz")
    async def healthz() -> Response:
        return Response("ok\n", content_type="text/plain")

    @app.route("/metrics")
    async def metrics() -> Response:
        body = await render_metrics(services)
        return Response(body, content_type=CONTENT_TYPE_LATEST)

    @app.route("/readyz")
    async def readyz() -> Response:
        view = services.view
        redis_ok = view.healthy and view.state is not None
        backend_fault = await services.forwarder.probe()
        reasons = []
        if not redis_ok:
            reasons.append("redis unreachable (or the room's state not read yet)")
        if backend_fault:
            reasons.append(backend_fault)
        body: dict[str, Any] = {
            "ready": not reasons,
            "redis": redis_ok,
            "backend": backend_fault is None,
            "pacer": services.pacer.holder,
        }
        if reasons:
            body["reason"] = "; ".join(reasons)
        return _json(body, 503 if reasons else 200)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = exc.code or 400
        if _wants_json():
            return _json({"error": exc.name, "detail": exc.description}, code)
        return await _message_page(
            "title_bad_request", "not_found" if code == 404 else None, code, detail=exc.description
        )

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        # The last line of defence: log it for us, a calm retry page for the student.
        log.exception("waitroom: unexpected error on %s %s", request.method, request.path)
        if _wants_json():
            return _json({"state": "unavailable", "retry_after_s": 5}, 503, {"Retry-After": "5"})
        return await _message_page("title_unavailable", "unavailable", 503, retry_s=5)

    return app


# -- the line's entry ------------------------------------------------------------


async def _admit_then_forward(
    services: Services, *, json_only: bool = False, forward: bool = True
) -> Response:
    """Pass → forward; ticket at the front → pass, forward; ticket → standing; else join."""
    signer = services.signer
    as_json = json_only or _wants_json()
    notice: str | None = None

    pass_token = request.cookies.get(PASS_COOKIE)
    if pass_token:
        try:
            admission = signer.read_pass(pass_token)
        except TicketRejected as exc:
            services.stats.count(f"rejected:pass:{exc.reason}")
            notice = "pass_expired" if exc.reason == "expired" else f"rejected_{exc.reason}"
        else:
            if not forward or (as_json and request.method == "GET"):
                return _admitted_json()
            return await _forward(services, admission.id)

    state = services.view.state
    if state is not None and state.mode == "pass-through" and forward:
        # The kill switch: no line at all, every request goes to the backend.
        if as_json and request.method == "GET":
            return _admitted_json()
        return await _forward(services, None)
    ticket_token = request.cookies.get(TICKET_COOKIE)
    if ticket_token:
        try:
            ticket = signer.read_ticket(ticket_token, state.epoch if state else None)
        except TicketRejected as exc:
            services.stats.count(f"rejected:ticket:{exc.reason}")
            notice = notice or f"rejected_{exc.reason}"
        else:
            now = standing(ticket, services.view)
            if not (now.ready and forward):
                return await _waiting(services, ticket, now, as_json, notice)
            admitted = await _admit(services, ticket, as_json)
            if admitted is not None:
                return admitted
            notice = "rejected_spent"

    wait_s = await services.limits.take_join(request.scope.get("client"), request.scope["headers"])
    if wait_s is not None:
        services.stats.count("limited:joins")
        return await _join_limited(wait_s, as_json)
    try:
        joined = await services.queue.join()
        if joined is None:
            await services.view.restore()
            joined = await services.queue.join()
    except StoreUnavailable as exc:
        services.stats.count("store_error:join")
        log.warning("waitroom: %s; new arrival asked to retry", exc)
        joined = None
    if joined is None:
        if as_json:
            return _json({"state": "unavailable", "retry_after_s": 10}, 503, {"Retry-After": "10"})
        return await _message_page("title_unavailable", "unavailable", 503, retry_s=10)

    ticket, token = signer.issue_ticket(joined.position, joined.epoch, joined.frontier)
    if joined.admitted and forward:
        admitted = await _admit(services, ticket, as_json)
        if admitted is not None:  # a brand-new ticket is never spent
            return admitted
    now = standing(ticket, services.view)
    response = await _waiting(services, ticket, now, as_json, notice)
    _set_cookie(response, TICKET_COOKIE, token, services.settings.ticket_ttl_s, services)
    response.delete_cookie(PASS_COOKIE)
    return response


async def _admit(services: Services, ticket: Ticket, as_json: bool) -> Response | None:
    """Trade an admitted ticket for a pass, then forward this very request.

    A ticket is traded once: a copy kept or shared after its owner got a pass gets
    None here (the caller gives a new place). A JSON client asking ``GET /`` gets
    the news as JSON instead of the backend's HTML form: it goes on with
    ``POST /api/result``.
    """
    try:
        first = await services.queue.spend(ticket.id)
    except StoreUnavailable as exc:
        services.stats.count("store_error:spend")
        # Fail open: a student who reached the front is never stranded by an outage.
        log.warning("waitroom: %s; ticket exchanged unchecked", exc)
        first = True
    if not first:
        return None
    _, token = services.signer.issue_pass(ticket.id, ticket.epoch)
    if as_json and request.method == "GET":
        response = _admitted_json()
    else:
        response = await _forward(services, ticket.id)
    _set_cookie(response, PASS_COOKIE, token, services.view.pass_ttl_s(), services)
    # The ticket is spent: when the pass expires the student joins at the back.
    response.delete_cookie(TICKET_COOKIE)
    return response


async def _forward(services: Services, pass_id: str | None) -> Response:
    """Forward to the backend; a lookup is counted against ``pass_id`` (None: the
    pass-through mode, no line and no passes, so nothing to count)."""
    method, path = request.method, request.path
    if (method, path) not in FORWARDED:
        return _json({"error": "not found"}, 404)
    body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    # The lean layer already tried the backend for this very request.
    fault = request.scope.get(BACKEND_FAULT)
    limited = request.scope.get(LOOKUP_LIMITED)
    if isinstance(limited, LookupVerdict):
        services.stats.count("limited:lookups")
        return await _lookup_limited(limited)
    verdict = None
    if method == "POST" and not fault and pass_id is not None:
        verdict = await services.limits.take_lookup(pass_id)
        if not verdict.allowed:
            services.stats.count("limited:lookups")
            return await _lookup_limited(verdict)
    try:
        if fault:
            raise BackendUnavailable(services.forwarder.url + path, str(fault))
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()
        ]
        answer = await services.forwarder.forward(method, path, headers, body)
    except BackendUnavailable as exc:
        if verdict is not None and pass_id is not None:
            await services.limits.settle(pass_id, verdict, None)
        log.warning("waitroom: %s", exc)
        if _wants_json():
            return _json({"state": "busy", "retry_after_s": 5}, 503, {"Retry-After": "5"})
        form = await request.form if method == "POST" else {}
        return await _message_page(
            "title_busy", "busy", 503, retry_s=5, resubmit=dict(form), action=path
        )
    if verdict is not None and pass_id is not None:
        await services.limits.settle(pass_id, verdict, answer.status)
    headers_out = {k.decode("latin-1"): v.decode("latin-1") for k, v in answer.headers}
    return Response(answer.body, status=answer.status, headers=headers_out)


async def _lookup_limited(verdict: LookupVerdict) -> Response:
    """The pass has bought all its lookups: say so, and send the student to the line.

    The pass cookie is dropped, so the next visit to ``/`` joins the line again.
    """
    if _wants_json():
        response = _json(
            {
                "state": "limit_reached",
                "error": "lookup_limit",
                "limit": verdict.limit,
                "message": f"This admission allowed {verdict.limit} lookups and all were "
                "used. Join the line again (GET /) to look up more.",
                "join_url": "/",
            },
            429,
        )
    else:
        response = await _message_page(
            "title_lookup_limit", "lookup_limit", 429, fmt={"limit": verdict.limit}
        )
    response.delete_cookie(PASS_COOKIE)
    return response


async def _join_limited(wait_s: int, as_json: bool) -> Response:
    """Too many new places taken from this client lately: a calm page that retries."""
    headers = {"Retry-After": str(wait_s)}
    if as_json:
        body = {
            "state": "limited",
            "error": "too_many_joins",
            "retry_after_s": wait_s,
            "message": "Too many new places in line were taken from your network just "
            f"now. Try again in {wait_s} s; a place you already hold is kept.",
        }
        return _json(body, 429, headers)
    return await _message_page(
        "title_join_limit", "join_limit", 429, retry_s=wait_s, fmt={"seconds": wait_s}
    )


async def _waiting(
    services: Services, ticket: Ticket, now: Standing, as_json: bool, notice: str | None
) -> Response:
    headers = {"Retry-After": str(now.retry_after_s), "Cache-Control": "no-store"}
    if as_json:
        body = now.as_json()
        if notice:
            body["notice"] = notice
        return _json(body, 200 if now.ready else 202, headers)
    if now.prequeue:
        html = _render(
            "prequeue.html", standing=now, ticket=ticket, notice=notice, countdown=_countdown(now)
        )
        status = services.settings.waiting_status
        return Response(html, status=status, headers=headers, content_type="text/html")
    span = max(1, now.position - ticket.joined_frontier)
    done = min(span, max(0, span - now.ahead - 1)) if not now.ready else span
    html = _render(
        "progress.html",
        standing=now,
        ticket=ticket,
        notice=notice,
        progress_max=span,
        progress_value=done,
        stale=now.stale,
        paused=now.paused,
    )
    status = 200 if now.ready else services.settings.waiting_status
    return Response(html, status=status, headers=headers, content_type="text/html")


# -- helpers ---------------------------------------------------------------------


def _countdown(now: Standing) -> str:
    left = max(0, int((now.release_at_ms or 0) / 1000 - time.time()))
    hours, rest = divmod(left, 3600)
    return (f"{hours}:{rest // 60:02d}" if hours else f"{rest // 60}") + f":{rest % 60:02d}"


def _render(name: str, **context: Any) -> str:
    services: Services = current_app.extensions["waitroom"]
    return services.pages.render(name, _language(), **context)


def _language() -> str:
    return pick_language(
        request.args.get("lang"),
        request.cookies.get(LANG_COOKIE),
        request.headers.get("Accept-Language"),
    )


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/status")) or wants_json(request.scope["headers"])


def _admitted_json() -> Response:
    return _json({"state": "admitted", "retry_after_s": 0, "result_url": "/api/result"}, 200)


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    response = Response(_dumps(body), status=status, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _set_cookie(
    response: Response, name: str, value: str, max_age: int, services: Services
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        httponly=True,
        samesite="Lax",
        secure=services.settings.cookie_secure,
        path="/",
    )


async def _message_page(
    title: str,
    message: str | None,
    status: int,
    *,
    retry_s: int | None = None,
    detail: str | None = None,
    resubmit: dict[str, str] | None = None,
    action: str | None = None,
    fmt: dict[str, Any] | None = None,
) -> Response:
    html = _render(
        "message.html",
        title_key=title,
        message_key=message,
        fmt=fmt or {},
        retry_s=retry_s,
        detail=detail,
        resubmit=resubmit or {},
        action=action,
    )
    response = Response(html, status=status, content_type="text/html")
    response.headers["Cache-Control"] = "no-store"
    if retry_s is not None:
        response.headers["Retry-After"] = str(retry_s)
    return response

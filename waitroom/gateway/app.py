"""The gateway: the lean student layer in front of a Quart app for the rest.

``create_app(settings)`` builds one app with its own services (Redis client, line,
cached view, pacer, door, forwarder); they are opened and closed in
``while_serving``. Every request a student makes is answered by the lean layer
(``waitroom.gateway.lean``), installed as ``app.asgi_app`` middleware, so the Quart object
is the complete ASGI application; Quart itself serves the admin pages,
``/metrics``, ``/readyz``, ``/healthz`` and the calm answer to anything else under
them (every other path is the origin's).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from quart import Quart, Response, request
from werkzeug.exceptions import HTTPException

from waitroom.gateway.admin.blueprint import Admin
from waitroom.gateway.i18n import pick_language
from waitroom.gateway.lean import MAX_BODY, Lean, wants_json
from waitroom.gateway.metrics import CONTENT_TYPE_LATEST, render_metrics
from waitroom.gateway.replies import Replies
from waitroom.gateway.responses import LANG_COOKIE, SECURITY_HEADERS, CookiePolicy
from waitroom.gateway.services import Services, admin_settings
from waitroom.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Quart:
    settings = settings or Settings.from_env()
    app = Quart(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    services = Services.build(settings)
    app.extensions["waitroom"] = services
    cookies = CookiePolicy(settings.cookie_secure)
    replies = Replies(
        services.pages,
        cookies,
        waiting_status=settings.waiting_status,
        ticket_ttl_s=settings.ticket_ttl_s,
        pass_ttl_s=services.view.pass_ttl_s,
    )
    app.asgi_app = Lean(  # type: ignore[method-assign,assignment]
        app.asgi_app,  # type: ignore[arg-type]
        services.door,
        replies,
        services.view,
        services.assets,
        services.forwarder,
        cookies=cookies,
        body_timeout_s=settings.body_timeout_s,
        pass_ttl_s=services.view.pass_ttl_s,
        protected_paths=settings.protected_paths,
        max_body_bytes=settings.max_body_bytes,
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
        # What start-up built lives as long as the worker: moved out of the
        # collector's sight, collections stop walking it (measured under load: the
        # collector's share of a worker's CPU went from 3 % to 1 %).
        gc.collect()
        gc.freeze()
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

    app.add_template_filter(services.pages.clock, "clock")

    admin = Admin(
        admin_settings(settings),
        services.auth,
        cookies,
        redis=services.redis,
        queue=services.queue,
        view=services.view,
        pacer=services.pacer,
    )
    app.register_blueprint(admin.blueprint())

    @app.context_processor
    def template_globals() -> dict[str, Any]:
        return services.pages.globals_for(_language())

    @app.after_request
    async def headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS:
            response.headers.setdefault(name.decode(), value.decode())
        return response

    @app.route("/healthz")
    async def healthz() -> Response:
        return Response("ok\n", content_type="text/plain")

    @app.route("/metrics")
    async def metrics() -> Response:
        body = await render_metrics(services.redis, services.queue.keys, services.view)
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
        html = services.pages.render(
            "message.html",
            _language(),
            title_key="title_bad_request",
            message_key="not_found" if code == 404 else None,
            fmt={},
            retry=None,
            detail=exc.description,
            resubmit={},
            action=None,
        )
        return _html(html, code)

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        # The last line of defence: log it for us, a calm retry page for the student.
        log.exception("waitroom: unexpected error on %s %s", request.method, request.path)
        if _wants_json():
            return _json({"state": "unavailable", "retry_after_s": 5}, 503, {"Retry-After": "5"})
        html = services.pages.message("title_unavailable", "unavailable", _language(), retry_s=5)
        return _html(html.decode(), 503, {"Retry-After": "5"})

    return app


# -- helpers ---------------------------------------------------------------------


def _language() -> str:
    return pick_language(
        request.args.get("lang"),
        request.cookies.get(LANG_COOKIE),
        request.headers.get("Accept-Language"),
    )


def _wants_json() -> bool:
    return request.path.startswith(("/api/", "/status")) or wants_json(request.scope["headers"])


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    response = Response(text, status=status, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _html(html: str, status: int, headers: dict[str, str] | None = None) -> Response:
    response = Response(html, status=status, content_type="text/html")
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response

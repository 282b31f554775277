"""The admin page: a live view of the line and the controls that tune admission.

Everything here is behind a login (``admin.auth``); every state-changing request
carries the session's CSRF token. A change is checked whole before anything is
written (``controls``), then applied and audited in one Lua step, and reaches every
gateway worker at its next view refresh (a quarter of a second by default).
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from quart import Blueprint, Response, redirect, render_template, request
from werkzeug.wrappers.response import Response as WerkzeugResponse

from waitroom.errors import StoreUnavailable
from waitroom.gateway.admin.auth import (
    LOGIN_COOKIE,
    MAX_FAILURES,
    SESSION_COOKIE,
    Session,
    same,
    verify_password_async,
)
from waitroom.gateway.services import Services
from waitroom.line import controls, release
from waitroom.line.state import RoomState
from waitroom.room.abuse import client_address, parse_networks
from waitroom.room.telemetry import read_series

log = logging.getLogger(__name__)

AUDIT_LEN = 500
AUDIT_SHOWN = 50
# The live chart's history: 15 minutes of one-second samples.
SERIES_SHOWN = 900
# An average over this many samples smooths the per-second figures.
SMOOTH = 5

Reply = Response | WerkzeugResponse


def admin_blueprint(services: Services) -> Blueprint:
    bp = Blueprint("admin", __name__, url_prefix="/admin")
    settings = services.settings
    auth = services.auth

    def enabled() -> bool:
        return bool(settings.admin_password_hash)

    trusted = parse_networks(settings.trusted_proxies)

    def address() -> str:
        # The client as the join limit sees it: behind a trusted balancer the
        # balancer's address would let any student lock the admin out.
        forwarded = [v.encode("latin-1") for v in request.headers.getlist("X-Forwarded-For")]
        return client_address(request.remote_addr, forwarded, trusted)

    async def session() -> Session | None:
        return await auth.load(request.cookies.get(SESSION_COOKIE))

    async def csrf_ok(current: Session) -> bool:
        form = await request.form
        token = form.get("csrf") or request.headers.get("X-CSRF-Token")
        return same(token, current.csrf)

    @bp.before_request
    async def guard() -> Reply | None:
        if not enabled():
            return await _page(
                "admin_message.html",
                404,
                message="The admin page is off: no password is configured. Set "
                "WAITROOM_ADMIN_PASSWORD_HASH to the output of `waitroom hash-password`.",
            )
        return None

    @bp.errorhandler(StoreUnavailable)
    async def store_down(exc: StoreUnavailable) -> Reply:
        return await _page(
            "admin_message.html",
            503,
            message="Redis is unreachable, so sessions and controls cannot be checked "
            "or changed. Students keep their places. Retry in a few seconds.",
            retry_s=5,
        )

    # -- login ----------------------------------------------------------------------

    @bp.get("/login")
    async def login_form() -> Reply:
        return await _login_page(services, error=None, status=200)

    @bp.post("/login")
    async def login() -> Reply:
        form = await request.form
        who = address()
        if not auth.login_token_ok(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
            log.warning(
                "waitroom: admin login refused from %s: the login form's token was missing, "
                "expired or not this page's (a cross-site post, or a stale tab)",
                who,
            )
            return await _login_page(
                services, "The form expired or was not sent from this page; try again.", 400
            )
        # Counted before the password is checked, atomically: parallel guesses
        # cannot all read a count below the limit.
        attempt = await auth.attempt(who)
        if not attempt.allowed:
            locked = attempt.retry_after_s
            if attempt.first_refused:
                log.warning(
                    "waitroom: admin login refused from %s: locked out for %d s after "
                    "%d failed logins",
                    who,
                    locked,
                    MAX_FAILURES,
                )
            locked_page = await _login_page(
                services,
                f"Too many failed logins from {who}. Try again in {locked // 60 + 1} min.",
                429,
            )
            locked_page.headers["Retry-After"] = str(locked)
            return locked_page
        await auth.slow_down(attempt)
        if not await verify_password_async(form.get("password", ""), settings.admin_password_hash):
            log.warning("waitroom: admin login failed from %s: wrong password", who)
            return await _login_page(services, "Wrong password.", 401)
        await auth.succeeded(who)
        session_, token = await auth.start(who)
        log.info("waitroom: admin logged in from %s (session %s)", who, session_.tag)
        response: Reply = redirect("/admin", 303)
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=settings.admin_session_ttl_s,
            httponly=True,
            samesite="Strict",
            secure=settings.cookie_secure,
            path="/admin",
        )
        response.delete_cookie(LOGIN_COOKIE, path="/admin")
        return response

    @bp.post("/logout")
    async def logout() -> Reply:
        current = await session()
        if current is not None:
            if not await csrf_ok(current):
                return await _forbidden()
            await auth.end(current)
        response: Reply = redirect("/admin/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/admin")
        return response

    # -- the page and its live data ---------------------------------------------------

    @bp.get("")
    @bp.get("/")
    async def dashboard() -> Reply:
        current = await session()
        if current is None:
            return redirect("/admin/login", 303)
        return await _dashboard(services, current, errors=[], status=200)

    @bp.get("/live.json")
    async def live() -> Reply:
        current = await session()
        if current is None:
            return _json({"error": "not logged in", "login": "/admin/login"}, 401)
        since = _float(request.args.get("since"))
        # A page that has the chart asks only for the seconds since (one a second).
        missing = math.ceil(time.time() - since) + 2 if since > 0 else SERIES_SHOWN
        count = max(SMOOTH, min(SERIES_SHOWN, missing))
        series = await read_series(services.redis, services.queue.keys, count)
        body = _live(services, series)
        body["series"] = [x for x in series if x["t"] > since]
        return _json(body, 200)

    # -- controls ----------------------------------------------------------------------

    # What each control is while the config hash has no value for it (configure.lua
    # records these as the old value, so the audit shows what an admin replaced).
    defaults = {
        "rate": controls.number_text(settings.rate),
        "max_active": str(settings.max_active),
        "pass_ttl_s": str(settings.pass_ttl_s),
        "mode": "queue",
        "paused": "0",
        "protected_paths": settings.protected_paths,
        "rate_auto": "1" if settings.rate_auto else "0",
    }

    async def change(current: Session, changes: dict[str, str]) -> Reply:
        meta = {
            "at": round(time.time(), 3),
            "session": current.tag,
            "address": address(),
            "defaults": defaults,
        }
        done = await services.queue.configure(changes, meta, AUDIT_LEN)
        if not done.ok:
            error = controls.FieldError(
                "release_at",
                "",
                f"The last release's pre-queue is still being admitted (frontier "
                f"{done.frontier} of {done.size}); wait until it is through.",
            )
            return await _dashboard(services, current, errors=[error], status=409)
        await services.view.refresh()  # this worker shows the change at once
        return redirect("/admin?saved=1", 303)

    async def authorised() -> Session | Reply:
        current = await session()
        if current is None:
            return redirect("/admin/login", 303)
        if not await csrf_ok(current):
            return await _forbidden()
        return current

    @bp.post("/settings")
    async def save_settings() -> Reply:
        current = await authorised()
        if not isinstance(current, Session):
            return current
        form = await request.form
        changes, errors = controls.parse_settings(form)
        if errors:
            return await _dashboard(services, current, errors=errors, status=400)
        # The form sends every field; only what differs from the values in force is
        # a change (and an audit entry).
        state = services.view.state
        if state is not None:
            changes = {k: v for k, v in changes.items() if not _in_force(state, k, v)}
        return await change(current, changes)

    @bp.post("/pause")
    async def pause() -> Reply:
        current = await authorised()
        if not isinstance(current, Session):
            return current
        return await change(current, {"paused": "1"})

    @bp.post("/resume")
    async def resume() -> Reply:
        current = await authorised()
        if not isinstance(current, Session):
            return current
        return await change(current, {"paused": ""})

    @bp.post("/release")
    async def schedule_release() -> Reply:
        current = await authorised()
        if not isinstance(current, Session):
            return current
        form = await request.form
        if form.get("cancel"):
            return await change(current, {"release_at": ""})
        changes, errors = controls.parse_release(
            form.get("release_at", ""), form.get("tz_offset", ""), time.time()
        )
        if errors:
            return await _dashboard(services, current, errors=errors, status=400)
        return await change(current, changes)

    @bp.after_request
    async def no_store(response: Response) -> Response:
        response.headers["Cache-Control"] = "no-store"
        return response

    return bp


# -- rendering ----------------------------------------------------------------------


def _live(services: Services, series: list[dict[str, Any]]) -> dict[str, Any]:
    view = services.view
    s = view.state
    recent = series[-SMOOTH:]

    def mean(key: str) -> float | None:
        values = [x[key] for x in recent if x.get(key) is not None]
        return round(sum(values) / len(values), 2) if values else None

    capacity = view.capacity_rate()
    body: dict[str, Any] = {
        "now": time.time(),
        "redis": view.healthy,
        "pacer_here": services.pacer.holder,
    }
    if s is None:
        return body
    latest = series[-1] if series else {}
    target = s.target_rate
    factor = s.admission_rate / target if target > 0 else 1.0
    body.update(
        mode=s.mode,
        paused=s.paused,
        held=s.held,
        # The admin's rate caps what reaches the backend; the governor may hold the
        # target below it, and the pacer admits target x no-show factor so that the
        # students who do come match the target. Shown side by side so they agree.
        rate=s.rate,
        target_rate=round(target, 3),
        noshow_factor=round(factor, 3),
        admission_rate=round(s.admission_rate, 3),
        effective_rate=s.effective_rate,
        governor_reason=s.governor_reason,
        governor_at=s.governor_at,
        rate_auto=s.rate_auto,
        rate_mode=rate_mode(s),
        capacity=None if s.search.capacity is None else round(s.search.capacity, 1),
        per_admission=s.search.per_admission,
        search=s.search.phase or None,
        shown_total=s.shown,
        max_active=s.max_active,
        pass_ttl_s=s.pass_ttl_s,
        waiting=s.waiting,
        last_position=s.seq,
        frontier=s.frontier,
        active=latest.get("active", s.active),
        admitted_total=s.admitted,
        admitted_per_s=mean("admitted_per_s"),
        arrivals_per_s=mean("arrivals_per_s"),
        drain_s=None if s.held or capacity <= 0 else round(s.waiting / capacity),
        p50_ms=latest.get("p50_ms"),
        p95_ms=latest.get("p95_ms"),
        error_rate=latest.get("error_rate"),
        banner=dict(s.banner),
        protected_paths=s.protected_paths,
    )
    if s.release_at_ms is not None:
        body["release"] = release.public_info(
            s.release_at_ms, s.release_seed, s.release_base, s.released_n
        )
    return body


def rate_mode(state: RoomState) -> str:
    """The rate's mode in a few words, with the capacity the auto rate found."""
    if not state.rate_auto:
        return "fixed"
    if state.search.capacity is None:
        return "auto: searching for the backend's capacity"
    return f"auto: found about {state.search.capacity:.0f} lookups/s"


async def _dashboard(
    services: Services, current: Session, *, errors: list[controls.FieldError], status: int
) -> Reply:
    state = services.view.state
    entries = await services.queue.audit(AUDIT_SHOWN)
    released = state is not None and state.released_n is not None
    for entry in entries:
        for side in ("old", "new"):
            if entry.get(side) == "":
                entry[side] = "(none)"
        if entry.get("field") == "release_at":
            for side in ("old", "new"):
                if str(entry.get(side) or "").isdigit():
                    entry[side] = _utc(int(entry[side]) / 1000)
        # The seed stays secret until the release: show the commitment instead.
        if entry.get("field") == "release_seed" and entry.get("new") and not released:
            entry["new"] = "sha256:" + release.commitment(entry["new"])[:16] + "…"
    series = await read_series(services.redis, services.queue.keys, SERIES_SHOWN)
    return await _page(
        "admin.html",
        status,
        session=current,
        state=state,
        live=_live(services, series),
        errors=errors,
        error_fields={e.field for e in errors},
        form=await request.form if request.method == "POST" else {},
        audit=entries,
        modes=controls.MODES,
        rate_modes=controls.RATE_MODES,
        saved=request.args.get("saved") == "1",
        settings=services.settings,
    )


async def _login_page(services: Services, error: str | None, status: int) -> Response:
    value, cookie = services.auth.login_token()
    response = await _page("admin_login.html", status, error=error, csrf=value)
    response.set_cookie(
        LOGIN_COOKIE,
        cookie,
        max_age=3600,
        httponly=True,
        samesite="Strict",
        secure=services.settings.cookie_secure,
        path="/admin",
    )
    return response


async def _forbidden() -> Response:
    return await _page(
        "admin_message.html",
        403,
        message="This form was not sent from your admin page (its security token did not "
        "match), so nothing was changed. Reload the admin page and try again.",
    )


async def _page(template: str, status: int, **context: Any) -> Response:
    html = await render_template(template, **context)
    response = Response(html, status=status, content_type="text/html")
    if context.get("retry_s"):
        response.headers["Retry-After"] = str(context["retry_s"])
    return response


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _in_force(state: RoomState, field: str, value: str) -> bool:
    current: dict[str, object] = {
        "rate": state.rate,
        "max_active": state.max_active,
        "pass_ttl_s": state.pass_ttl_s,
        "mode": state.mode,
        "banner_en": dict(state.banner).get("en", ""),
        "banner_hi": dict(state.banner).get("hi", ""),
        "protected_paths": state.protected_paths,
        "rate_auto": "1" if state.rate_auto else "0",
    }
    if field not in current:
        return False
    expected = current[field]
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        return float(value) == float(expected)
    return value == expected


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def _float(text: str | None) -> float:
    try:
        value = float(text or 0)
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0

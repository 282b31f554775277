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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from quart import Blueprint, Response, g, redirect, render_template, request
from werkzeug.wrappers.response import Response as WerkzeugResponse

from waitroom.errors import StoreUnavailable
from waitroom.gateway.admin.auth import (
    LOGIN_TOKEN_TTL_S,
    MAX_FAILURES,
    AdminAuth,
    Session,
    same,
    verify_password_async,
)
from waitroom.gateway.responses import LOGIN_COOKIE, SESSION_COOKIE, CookiePolicy
from waitroom.line import controls, release
from waitroom.line.state import Queue, RoomState
from waitroom.line.store import Client
from waitroom.room.abuse import IPNetwork, client_address
from waitroom.room.pacer import Pacer
from waitroom.room.snapshot import RoomView
from waitroom.room.telemetry import read_series

log = logging.getLogger(__name__)

AUDIT_LEN = 500
AUDIT_SHOWN = 50
# The live chart's history: 15 minutes of one-second samples.
SERIES_SHOWN = 900
# An average over this many samples smooths the per-second figures.
SMOOTH = 5

Reply = Response | WerkzeugResponse


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """What the admin page is configured with (built from ``Settings`` by the app)."""

    room: str
    # Empty: the admin page is off.
    password_hash: str
    session_ttl_s: int
    # The balancers whose X-Forwarded-For is believed (as the join limit believes it).
    trusted: Sequence[IPNetwork]
    # What each control is while the config hash has no value for it (configure.lua
    # records these as the old value, so the audit shows what an admin replaced).
    defaults: dict[str, str]


class Access(Enum):
    """Who may ask for a route: the one check (``Admin.authorise``) reads this."""

    OPEN = "open"  # the login form (it carries its own token)
    PAGE = "page"  # a logged-in admin's page; else the login form
    DATA = "data"  # a logged-in admin's JSON; else a 401
    CHANGE = "change"  # a logged-in admin's change, with the session's CSRF token
    LEAVE = "leave"  # logging out: the CSRF token when there is a session to end


class Admin:
    """The admin's routes, over the parts of a worker they use."""

    def __init__(
        self,
        settings: AdminSettings,
        auth: AdminAuth,
        cookies: CookiePolicy,
        *,
        redis: Client,
        queue: Queue,
        view: RoomView,
        pacer: Pacer,
    ) -> None:
        self.settings = settings
        self.auth = auth
        self.cookies = cookies
        self.redis = redis
        self.queue = queue
        self.view = view
        self.pacer = pacer
        self.access: dict[str, Access] = {}

    def blueprint(self) -> Blueprint:
        bp = Blueprint("admin", __name__, url_prefix="/admin")
        routes: list[tuple[str, str, Callable[[], Awaitable[Reply]], Access]] = [
            ("/login", "GET", self.login_form, Access.OPEN),
            ("/login", "POST", self.login, Access.OPEN),
            ("/logout", "POST", self.logout, Access.LEAVE),
            ("", "GET", self.dashboard, Access.PAGE),
            ("/", "GET", self.dashboard, Access.PAGE),
            ("/live.json", "GET", self.live, Access.DATA),
            ("/settings", "POST", self.save_settings, Access.CHANGE),
            ("/pause", "POST", self.pause, Access.CHANGE),
            ("/resume", "POST", self.resume, Access.CHANGE),
            ("/release", "POST", self.schedule_release, Access.CHANGE),
        ]
        for rule, method, view, access in routes:
            endpoint = view.__name__
            bp.add_url_rule(rule, endpoint, view, methods=[method])
            self.access[f"{bp.name}.{endpoint}"] = access
        bp.before_request(self.authorise)
        bp.errorhandler(StoreUnavailable)(self.store_down)
        bp.after_request(_no_store)
        return bp

    # -- the one check -------------------------------------------------------------

    async def authorise(self) -> Reply | None:
        """Before every route: the page is on, and the request may have what it asks
        for (``Access``). The session it finds is ``current()``'s."""
        if not self.settings.password_hash:
            return await _page(
                "admin_message.html",
                404,
                message="The admin page is off: no password is configured. Set "
                "WAITROOM_ADMIN_PASSWORD_HASH to the output of `waitroom hash-password`.",
            )
        access = self.access[request.endpoint or ""]
        if access is Access.OPEN:
            return None
        current = await self.auth.load(request.cookies.get(SESSION_COOKIE))
        g.admin_session = current
        if current is None:
            if access is Access.DATA:
                return _json({"error": "not logged in", "login": "/admin/login"}, 401)
            if access is Access.LEAVE:
                return None
            return redirect("/admin/login", 303)
        if access in (Access.CHANGE, Access.LEAVE):
            form = await request.form
            token = form.get("csrf") or request.headers.get("X-CSRF-Token")
            if not same(token, current.csrf):
                return await _forbidden()
        return None

    @staticmethod
    def current() -> Session:
        """The session ``authorise`` found (only routes that need one ask)."""
        current: Session | None = g.admin_session
        assert current is not None
        return current

    def address(self) -> str:
        # The client as the join limit sees it: behind a trusted balancer the
        # balancer's address would let any student lock the admin out.
        forwarded = [v.encode("latin-1") for v in request.headers.getlist("X-Forwarded-For")]
        return client_address(request.remote_addr, forwarded, self.settings.trusted)

    async def store_down(self, exc: StoreUnavailable) -> Reply:
        return await _page(
            "admin_message.html",
            503,
            message="Redis is unreachable, so sessions and controls cannot be checked "
            "or changed. Students keep their places. Retry in a few seconds.",
            retry_s=5,
        )

    # -- login ----------------------------------------------------------------------

    async def login_form(self) -> Reply:
        return await self._login_page(error=None, status=200)

    async def login(self) -> Reply:
        form = await request.form
        who = self.address()
        auth = self.auth
        if not auth.login_token_ok(form.get("csrf"), request.cookies.get(LOGIN_COOKIE)):
            log.warning(
                "waitroom: admin login refused from %s: the login form's token was missing, "
                "expired or not this page's (a cross-site post, or a stale tab)",
                who,
            )
            return await self._login_page(
                "The form expired or was not sent from this page; try again.", 400
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
            locked_page = await self._login_page(
                f"Too many failed logins from {who}. Try again in {locked // 60 + 1} min.", 429
            )
            locked_page.headers["Retry-After"] = str(locked)
            return locked_page
        await auth.slow_down(attempt)
        password = form.get("password", "")
        if not await verify_password_async(password, self.settings.password_hash):
            log.warning("waitroom: admin login failed from %s: wrong password", who)
            return await self._login_page("Wrong password.", 401)
        await auth.succeeded(who)
        session, token = await auth.start(who)
        log.info("waitroom: admin logged in from %s (session %s)", who, session.tag)
        response: Reply = redirect("/admin", 303)
        self.cookies.set_on(response, SESSION_COOKIE, token, self.settings.session_ttl_s)
        self.cookies.drop_on(response, LOGIN_COOKIE)
        return response

    async def logout(self) -> Reply:
        current: Session | None = g.admin_session
        if current is not None:
            await self.auth.end(current)
        response: Reply = redirect("/admin/login", 303)
        self.cookies.drop_on(response, SESSION_COOKIE)
        return response

    async def _login_page(self, error: str | None, status: int) -> Response:
        value, cookie = self.auth.login_token()
        response = await _page("admin_login.html", status, error=error, csrf=value)
        self.cookies.set_on(response, LOGIN_COOKIE, cookie, LOGIN_TOKEN_TTL_S)
        return response

    # -- the page and its live data ---------------------------------------------------

    async def dashboard(self) -> Reply:
        return await self._dashboard(errors=[], status=200)

    async def live(self) -> Reply:
        since = _float(request.args.get("since"))
        # A page that has the chart asks only for the seconds since (one a second).
        missing = math.ceil(time.time() - since) + 2 if since > 0 else SERIES_SHOWN
        count = max(SMOOTH, min(SERIES_SHOWN, missing))
        series = await read_series(self.redis, self.queue.keys, count)
        body = live_body(self.view, self.pacer.holder, series)
        body["series"] = [x for x in series if x["t"] > since]
        return _json(body, 200)

    async def _dashboard(self, *, errors: list[controls.FieldError], status: int) -> Reply:
        state = self.view.state
        entries = _shown(await self.queue.audit(AUDIT_SHOWN), state)
        series = await read_series(self.redis, self.queue.keys, SERIES_SHOWN)
        return await _page(
            "admin.html",
            status,
            session=self.current(),
            state=state,
            live=live_body(self.view, self.pacer.holder, series),
            errors=errors,
            error_fields={e.field for e in errors},
            form=await request.form if request.method == "POST" else {},
            audit=entries,
            modes=controls.MODES,
            rate_modes=controls.RATE_MODES,
            saved=request.args.get("saved") == "1",
            settings=self.settings,
        )

    # -- controls ----------------------------------------------------------------------

    async def save_settings(self) -> Reply:
        form = await request.form
        changes, errors = controls.parse_settings(form)
        if errors:
            return await self._dashboard(errors=errors, status=400)
        # The form sends every field; only what differs from the values in force is
        # a change (and an audit entry).
        state = self.view.state
        if state is not None:
            changes = {k: v for k, v in changes.items() if not _in_force(state, k, v)}
        return await self._change(changes)

    async def pause(self) -> Reply:
        return await self._change({"paused": "1"})

    async def resume(self) -> Reply:
        return await self._change({"paused": ""})

    async def schedule_release(self) -> Reply:
        form = await request.form
        if form.get("cancel"):
            return await self._change({"release_at": ""})
        changes, errors = controls.parse_release(
            form.get("release_at", ""), form.get("tz_offset", ""), time.time()
        )
        if errors:
            return await self._dashboard(errors=errors, status=400)
        return await self._change(changes)

    async def _change(self, changes: dict[str, str]) -> Reply:
        meta = {
            "at": round(time.time(), 3),
            "session": self.current().tag,
            "address": self.address(),
            "defaults": self.settings.defaults,
        }
        done = await self.queue.configure(changes, meta, AUDIT_LEN)
        if not done.ok:
            error = controls.FieldError(
                "release_at",
                "",
                f"The last release's pre-queue is still being admitted (frontier "
                f"{done.frontier} of {done.size}); wait until it is through.",
            )
            return await self._dashboard(errors=[error], status=409)
        await self.view.refresh()  # this worker shows the change at once
        return redirect("/admin?saved=1", 303)


async def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


# -- rendering ----------------------------------------------------------------------


def live_body(view: RoomView, pacer_here: bool, series: list[dict[str, Any]]) -> dict[str, Any]:
    """The live figures, for the page and ``/admin/live.json``."""
    s = view.state
    recent = series[-SMOOTH:]

    def mean(key: str) -> float | None:
        values = [x[key] for x in recent if x.get(key) is not None]
        return round(sum(values) / len(values), 2) if values else None

    capacity = view.capacity_rate()
    body: dict[str, Any] = {
        "now": time.time(),
        "redis": view.healthy,
        "pacer_here": pacer_here,
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


def _shown(entries: list[dict[str, Any]], state: RoomState | None) -> list[dict[str, Any]]:
    """The audit's entries as the page shows them."""
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
    return entries


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

"""The students' pages: compiled once, then filled with a request's numbers.

A refresh of the waiting page is among the crowd's commonest requests, and even a
plain Jinja render cost it more than the server itself. So each page is rendered
once per language and variant (the notice, the message) with a marker in place of
every value that changes per request, split at the markers, and kept as bytes
(``Compiled``); a request only escapes its few values and joins the pieces.
Pages that carry a form to resubmit (the rare busy page after a backend fault) are
rendered in full by the same plain Jinja environment, as are Quart's error pages.
"""

from __future__ import annotations

import time
import zoneinfo
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from waitroom.gateway.i18n import MESSAGES
from waitroom.room.estimate import Standing
from waitroom.room.snapshot import RoomView
from waitroom.room.tickets import Ticket
from waitroom.shared.assets import Assets
from waitroom.shared.languages import LANGUAGE_NAMES, LANGUAGES

# Markers cannot occur in a template or a translation, and autoescaping keeps them.
_MARK = "\x00"
# Compiled variants kept per worker: languages x templates x notices x messages.
_MAX_COMPILED = 512


def iso(timestamp: float) -> str:
    """A machine-readable time for a ``<time datetime>`` attribute."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp)) if timestamp else ""


def minutes(low_s: int, high_s: int) -> tuple[int, int]:
    """An estimate's range in whole minutes, as the page shows it: never "0–…"
    while someone is ahead (the page says "under a minute" below a minute), and
    always a range. static/waitroom.js shows the same.
    """
    low = max(1, low_s // 60)
    high = max(low + 1, (high_s + 59) // 60)
    return low, high


class Compiled:
    """A page as one format string whose ``%s`` are its named slots, filled per request.

    A fill is one C-level ``%`` and one encode: measured, escaping every value through
    markupsafe cost the refresh more than the rest of the page. So values go in as
    they are: numbers, text of our own making, or text the caller escaped
    (``Pages.banner``: the admin's words, escaped once per refresh).
    """

    __slots__ = ("slots", "template")

    def __init__(self, rendered: str) -> None:
        pieces = rendered.split(_MARK)
        # Even pieces are literal text, odd ones slot names: "a", "x", "b", ...
        self.slots = tuple(pieces[1::2])
        self.template = "%s".join(p.replace("%", "%%") for p in pieces[0::2])

    def fill(self, values: Mapping[str, object]) -> bytes:
        return (self.template % tuple([values[slot] for slot in self.slots])).encode()


def _slot(name: str) -> str:
    return f"{_MARK}{name}{_MARK}"


class Pages:
    def __init__(self, assets: Assets, view: RoomView, time_zone: str = "Asia/Kolkata") -> None:
        self.assets = assets
        self.view = view
        self.zone = zoneinfo.ZoneInfo(time_zone)
        self.env = Environment(
            loader=PackageLoader("waitroom.gateway", "templates"),
            autoescape=select_autoescape(default=True),
            auto_reload=False,
        )
        self.env.filters["clock"] = self.clock
        self.env.filters["iso"] = iso
        self._compiled: dict[tuple[Any, ...], Compiled] = {}
        self._banners: dict[str, tuple[object, dict[str, Markup]]] = {}
        self._last_clock: tuple[float, str] = (-1.0, "")

    def clock(self, timestamp: float) -> str:
        """A time in the board's zone, zone named (the page's script shows it in the
        reader's own zone; without JavaScript this is what they read)."""
        if not timestamp:
            return "–"
        return datetime.fromtimestamp(timestamp, self.zone).strftime("%H:%M:%S %Z")

    # -- rendering ---------------------------------------------------------------------

    def globals_for(self, lang: str) -> dict[str, Any]:
        return {
            **self._banner(lang),
            "lang": lang,
            "t": MESSAGES[lang],
            "other_lang": next(code for code in LANGUAGES if code != lang),
            "language_names": LANGUAGE_NAMES,
            "asset": self.assets.url,
        }

    def render(self, name: str, lang: str, **context: Any) -> str:
        """A whole page, rendered now (the rare pages, and Quart's)."""
        return self.env.get_template(name).render(**self.globals_for(lang), **context)

    def compiled(
        self,
        name: str,
        lang: str,
        slots: tuple[str, ...],
        variant: tuple[tuple[str, Any], ...] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> Compiled:
        """``name`` in ``lang``, every name in ``slots`` (and the banner) left as a slot.

        ``variant`` is the rest of its context as hashable (name, value) pairs, so
        finding a compiled page costs one dict look-up; ``extra`` is context that
        follows from them (used only when compiling).
        """
        key = (name, lang, slots, variant)
        page = self._compiled.get(key)
        if page is None:
            context = {**self.globals_for(lang), **dict(variant), **(extra or {})}
            for slot in (*slots, "banner", "banner_hidden"):
                context[slot] = _slot(slot)
            page = Compiled(self.env.get_template(name).render(**context))
            if len(self._compiled) >= _MAX_COMPILED:
                self._compiled.clear()
            self._compiled[key] = page
        return page

    def _banner(self, lang: str) -> dict[str, Markup]:
        """The admin's banner, escaped once per refresh of the view: as Markup, so a
        full render does not escape it again and a compiled page's fill takes it as
        it is."""
        state = self.view.state
        cached = self._banners.get(lang)
        if cached is None or cached[0] is not state:
            banner = state.banner_text(lang) if state else ""
            values = {
                "banner": escape(banner),
                "banner_hidden": escape("" if banner else " hidden"),
            }
            cached = self._banners[lang] = (state, values)
        return cached[1]

    def _clock_of(self, timestamp: float) -> str:
        """``clock``, remembered for the last time asked: every page of one refresh of
        the view shows the same one."""
        last = self._last_clock
        if last[0] != timestamp:
            last = self._last_clock = (timestamp, self.clock(timestamp))
        return last[1]

    # -- the students' pages -----------------------------------------------------------

    _WAITING_SLOTS = (
        "retry",
        "position",
        "joined",
        "epoch",
        "ahead",
        "eta",
        "progress_max",
        "progress_value",
        "progress_pct",
        "stale_hidden",
        "paused_hidden",
        "updated_iso",
        "updated_clock",
    )

    def waiting(self, ticket: Ticket, now: Standing, notice: str | None, lang: str) -> bytes:
        if now.prequeue:
            return self.prequeue(ticket, now, notice, lang)
        t = MESSAGES[lang]
        span = max(1, now.position - ticket.joined_frontier)
        done = span if now.ready else min(span, max(0, span - now.ahead - 1))
        eta = now.estimate
        if eta is None:
            eta_text = t["eta_paused"]
        elif eta.high_s < 60:
            eta_text = t["eta_under_minute"]
        else:
            low, high = minutes(eta.low_s, eta.high_s)
            eta_text = t["eta_minutes"].format(low=low, high=high)
        page = self.compiled("progress.html", lang, self._WAITING_SLOTS, (("notice", notice),))
        return page.fill(
            {
                "retry": now.retry_after_s,
                "position": now.position,
                "joined": ticket.joined_frontier,
                # Signed by us, so it is ours; escaped all the same, it is a few bytes.
                "epoch": escape(ticket.epoch),
                "ahead": now.ahead,
                "eta": eta_text,
                "progress_max": span,
                "progress_value": done,
                "progress_pct": round(100 * done / span),
                "stale_hidden": "" if now.stale else " hidden",
                "paused_hidden": "" if now.paused else " hidden",
                "updated_iso": iso(now.updated_at),
                "updated_clock": self._clock_of(now.updated_at),
                **self._banner(lang),
            }
        )

    _PREQUEUE_SLOTS = (
        "retry",
        "release_ms",
        "epoch",
        "release_iso",
        "release_clock",
        "countdown",
        "stale_hidden",
    )

    def prequeue(self, ticket: Ticket, now: Standing, notice: str | None, lang: str) -> bytes:
        release_s = (now.release_at_ms or 0) / 1000
        page = self.compiled("prequeue.html", lang, self._PREQUEUE_SLOTS, (("notice", notice),))
        return page.fill(
            {
                "retry": now.retry_after_s,
                "release_ms": now.release_at_ms,
                "epoch": escape(ticket.epoch),
                "release_iso": iso(release_s),
                "release_clock": self.clock(release_s),
                "countdown": countdown(release_s - time.time()),
                "stale_hidden": "" if now.stale else " hidden",
                **self._banner(lang),
            }
        )

    def message(
        self,
        title_key: str,
        message_key: str | None,
        lang: str,
        *,
        retry_s: int | None = None,
        fmt: Mapping[str, int] | None = None,
    ) -> bytes:
        """A calm page: a title, a message with its numbers, a refresh after ``retry_s``."""
        names = tuple(sorted(fmt or ()))
        slots = ("retry", *names) if retry_s is not None else names
        page = self.compiled(
            "message.html",
            lang,
            slots,
            (("title_key", title_key), ("message_key", message_key)),
            # The message's numbers are slots too, inside its translated text.
            extra={"fmt": {name: _slot(name) for name in names}, "resubmit": {}},
        )
        values: dict[str, object] = {name: int(value) for name, value in (fmt or {}).items()}
        if retry_s is not None:
            values["retry"] = retry_s
        return page.fill({**values, **self._banner(lang)})

    def busy(self, lang: str, retry_s: int, resubmit: Mapping[str, str], action: str) -> bytes:
        """The busy page that resubmits a lookup by itself: rendered in full (rare)."""
        return self.render(
            "message.html",
            lang,
            title_key="title_busy",
            message_key="busy",
            fmt={},
            retry=retry_s,
            detail=None,
            resubmit=dict(resubmit),
            action=action,
        ).encode()


def countdown(seconds_left: float) -> str:
    left = max(0, int(seconds_left))
    hours, rest = divmod(left, 3600)
    return (f"{hours}:{rest // 60:02d}" if hours else f"{rest // 60}") + f":{rest % 60:02d}"

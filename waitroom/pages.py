"""The students' pages, rendered without the async machinery.

Quart renders templates through Jinja's async mode, which yields once per chunk
of output: most of the cost of a first visit (a new place in line) in our
profile. The students' pages need nothing async, so they are rendered by a plain
Jinja environment of their own, compiled once per worker; the admin pages stay
with Quart's.
"""

from __future__ import annotations

import time
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from waitroom.assets import Assets
from waitroom.i18n import LANGUAGE_NAMES, LANGUAGES, MESSAGES
from waitroom.view import RoomView


def clock(timestamp: float) -> str:
    """A time as the server tells it, zone included (the page's script shows it
    in the reader's zone)."""
    return time.strftime("%H:%M:%S %Z", time.localtime(timestamp)) if timestamp else "–"


def iso(timestamp: float) -> str:
    """A machine-readable time for a ``<time datetime>`` attribute."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp)) if timestamp else ""


class Pages:
    def __init__(self, assets: Assets, view: RoomView) -> None:
        self.assets = assets
        self.view = view
        self.env = Environment(
            loader=PackageLoader("waitroom", "templates"),
            autoescape=select_autoescape(default=True),
            auto_reload=False,
        )
        self.env.filters["clock"] = clock
        self.env.filters["iso"] = iso

    def globals_for(self, lang: str) -> dict[str, Any]:
        state = self.view.state
        return {
            "banner": state.banner_text(lang) if state else "",
            "lang": lang,
            "t": MESSAGES[lang],
            "other_lang": next(code for code in LANGUAGES if code != lang),
            "language_names": LANGUAGE_NAMES,
            "asset": self.assets.url,
        }

    def render(self, name: str, lang: str, **context: Any) -> str:
        return self.env.get_template(name).render(**self.globals_for(lang), **context)

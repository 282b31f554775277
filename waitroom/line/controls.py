"""The room's run-time controls: what an admin may change, and how it is checked.

Controls live in the room's Redis config hash (``RoomKeys.config``). The pacer's
Lua scripts read them on every tick and each worker's view every refresh, so a
change reaches every gateway worker within a fraction of a second. A form is
checked field by field before anything is written: one bad value changes nothing
and every problem is reported with the value that caused it.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from waitroom.errors import ConfigError
from waitroom.shared.paths import parse_rule

MODES = {
    "queue": "Queue: admit in order at the set rate",
    "queue-all": "Queue all: everyone waits, nobody is admitted (before a release)",
    "pass-through": "Pass-through: no queue, every request goes to the backend (kill switch)",
}
RATE_MODES = {
    "0": "Fixed: admit at this rate (lowered while the backend struggles)",
    "1": "Auto: find what the backend takes, at most this rate",
}
MAX_RATE = 100_000.0
MAX_ACTIVE = 10_000_000
PASS_TTL_RANGE = (10, 24 * 3600)
BANNER_MAX = 280
# How far ahead a release may be scheduled.
MAX_RELEASE_AHEAD_S = 7 * 24 * 3600


@dataclass(frozen=True)
class FieldError:
    field: str
    value: str
    message: str


def parse_settings(form: Mapping[str, str]) -> tuple[dict[str, str], list[FieldError]]:
    """The admission settings in ``form`` as config values, or the errors found."""
    changes: dict[str, str] = {}
    errors: list[FieldError] = []

    def number(field: str, label: str, low: float, high: float, *, whole: bool) -> None:
        raw = form.get(field)
        if raw is None:
            return
        text = raw.strip()
        try:
            value = float(text)
            if not math.isfinite(value) or (whole and value != int(value)):
                raise ValueError
        except ValueError:
            kind = "a whole number" if whole else "a number"
            errors.append(FieldError(field, raw, f"{label} must be {kind}; got {raw!r}"))
            return
        if not low <= value <= high:
            errors.append(
                FieldError(field, raw, f"{label} must be between {low:g} and {high:g}; got {text}")
            )
            return
        changes[field] = number_text(value)

    number("rate", "Admission rate (people per second)", 0.001, MAX_RATE, whole=False)
    number("max_active", "Max active passes", 1, MAX_ACTIVE, whole=True)
    number("pass_ttl_s", "Pass lifetime (seconds)", *PASS_TTL_RANGE, whole=True)

    def choice(field: str, allowed: Collection[str], must: str) -> None:
        value = form.get(field)
        if value is None:
            return
        if value in allowed:
            changes[field] = value
        else:
            errors.append(FieldError(field, value, f"{must}; got {value!r}"))

    # The auto rate (0: fixed): the governor searches for what the backend takes,
    # the admission rate being the most it may reach.
    choice("rate_auto", RATE_MODES, "Rate must be 0 (fixed) or 1 (auto, found by the governor)")
    choice("mode", MODES, f"Mode must be one of {', '.join(MODES)}")
    paths = form.get("protected_paths")
    if paths is not None:
        try:
            changes["protected_paths"] = parse_rule(paths).text
        except ConfigError as exc:
            errors.append(
                FieldError(
                    "protected_paths",
                    paths,
                    f"Protected paths: {exc.reason}; got {exc.value!r}",
                )
            )
    for lang in ("en", "hi"):
        field = f"banner_{lang}"
        if field in form:
            text = clean_banner(form[field])
            if len(text) > BANNER_MAX:
                errors.append(
                    FieldError(
                        field, text[:40] + "…", f"Banner must be at most {BANNER_MAX} characters"
                    )
                )
            else:
                changes[field] = text
    return changes, errors


def number_text(value: float) -> str:
    """A number as the config and the audit log keep it: "2" for 2.0, "12.5" as typed,
    so an admin reads back what they entered, not Python's float spelling."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def parse_release(
    when: str, tz_offset_min: str, now: float
) -> tuple[dict[str, str], list[FieldError]]:
    """A release time from a ``datetime-local`` value and the browser's UTC offset
    (``Date.getTimezoneOffset()``, minutes; absent means the value is UTC)."""
    text = when.strip()
    try:
        local = datetime.fromisoformat(text)
        if local.tzinfo is not None:
            raise ValueError("give a local time without a zone")
        offset = int(tz_offset_min or 0)
        if abs(offset) > 14 * 60:
            raise ValueError(f"time-zone offset {offset} min is out of range")
    except ValueError as exc:
        return {}, [FieldError("release_at", when, f"Release time must be a date and time: {exc}")]
    at = (local + timedelta(minutes=offset)).replace(tzinfo=UTC).timestamp()
    if at <= now:
        return {}, [FieldError("release_at", when, "Release time must be in the future")]
    if at - now > MAX_RELEASE_AHEAD_S:
        return {}, [FieldError("release_at", when, "Release time must be within 7 days")]
    return {"release_at": str(int(at * 1000))}, []


def clean_banner(text: str) -> str:
    """One line of plain text: control and format characters dropped (but the
    zero-width joiners that Devanagari spelling uses), spaces collapsed."""
    kept = "".join(
        " " if ch in "\r\n\t" else ch
        for ch in text
        if ch in "\r\n\t\u200c\u200d" or unicodedata.category(ch)[0] != "C"
    )
    return " ".join(kept.split())

"""Which of the origin's paths the room protects, and which cost a lookup.

A board's own portal has routes we cannot know in advance, so both are lists of
path patterns, chosen in the settings and (the protected ones) on the admin page:
``/result`` is that path exactly, ``/results/*`` every path that starts with
``/results/``, and ``/*`` every path. A request to a protected path waits in line;
any other path of the origin passes straight through, without a place. A request
to a lookup path (any method but ``HEAD``) counts against the pass's lookups.

The gateway's own routes (``/status``, ``/queue/state``, its hashed assets, the
admin pages, ``/metrics``, ``/readyz``, ``/healthz``) are never the origin's.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from waitroom.errors import ConfigError

# Everything the origin has: the default for a site we know nothing of.
EVERYTHING = "/*"
# The lookup backend's result routes: what a pass's lookup limit counts by default.
RESULT_ROUTES = "/result,/api/result"
MAX_PATTERNS = 64
_MAX_PATTERN_CHARS = 200


@dataclass(frozen=True, slots=True)
class PathRule:
    """A set of path patterns, matched in one dict lookup and one ``startswith``."""

    text: str
    exact: frozenset[str]
    prefixes: tuple[str, ...]

    def matches(self, path: str) -> bool:
        return path in self.exact or path.startswith(self.prefixes)


def parse_rule(text: str, setting: str = "protected_paths") -> PathRule:
    """The rule a comma-separated list of patterns spells; ``ConfigError`` naming
    ``setting`` and the bad pattern for anything else. An empty list matches nothing."""
    exact: set[str] = set()
    prefixes: list[str] = []
    patterns = [p.strip() for p in text.split(",") if p.strip()]
    if len(patterns) > MAX_PATTERNS:
        raise ConfigError(
            setting, text[:80], f"at most {MAX_PATTERNS} patterns, got {len(patterns)}"
        )
    for pattern in patterns:
        problem = _problem(pattern)
        if problem:
            raise ConfigError(setting, pattern, problem)
        if pattern.endswith("*"):
            prefixes.append(pattern[:-1])
        else:
            exact.add(pattern)
    return PathRule(",".join(patterns), frozenset(exact), tuple(prefixes))


@lru_cache(maxsize=16)
def cached_rule(text: str) -> PathRule:
    """The rule for a stored list: the room's state names it as text on every refresh,
    and it is parsed once (it was checked when it was stored)."""
    return parse_rule(text)


def _problem(pattern: str) -> str:
    if len(pattern) > _MAX_PATTERN_CHARS:
        return f"a pattern must be at most {_MAX_PATTERN_CHARS} characters"
    if not pattern.startswith("/"):
        return "a path pattern must start with / (for example /result or /results/*)"
    if "*" in pattern[:-1]:
        return "* may only end a pattern (/results/* means every path under /results/)"
    if any(ch.isspace() or ord(ch) < 32 for ch in pattern) or "?" in pattern or "#" in pattern:
        return "a path pattern has no spaces, query string or fragment"
    return ""

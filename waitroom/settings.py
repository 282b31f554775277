"""Gateway settings: from ``WAITROOM_*`` environment variables and CLI flags.

Every setting is parsed and checked once, at start, and a bad value stops the
process with an error that names the setting, the value and what is accepted
(``ConfigError``). The running code then reads plain typed attributes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from waitroom.errors import ConfigError
from waitroom.line.state import LineSettings
from waitroom.line.store import topology_of
from waitroom.shared.passwords import check_hash_format
from waitroom.shared.paths import EVERYTHING, RESULT_ROUTES, parse_rule
from waitroom.shared.secret_settings import (
    ENV_PREFIX,
    KEY_RECIPE,
    MODES,
    check_keys,
    check_not_shared,
    parse_keys,
    read_secret,
)

_ROOM_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def _networks(value: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks, each checked and normalised."""
    out = []
    for part in value.split(","):
        part = part.strip()
        if part:
            try:
                # strict=False: "10.0.0.1/8" means 10.0.0.0/8, as operators write it.
                out.append(str(ipaddress.ip_network(part, strict=False)))
            except ValueError:
                raise ValueError(
                    f"{part!r} is not an IP address or CIDR network (e.g. 10.0.0.0/8)"
                ) from None
    return tuple(out)


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


_AUTO: Any = None

# With ``--rate auto`` and no number the search may climb this high: far above
# any one board's backend, so the backend's health, not this, sets the rate.
AUTO_RATE_MAX = 1000.0
FIXED_RATE_DEFAULT = 10.0
MAX_ACTIVE_DEFAULT = 500


def parse_rate(setting: str, raw: str) -> tuple[float | None, bool]:
    """``--rate``/``WAITROOM_RATE``: people per second, or ``auto`` (the rate then
    is the most the search may reach, given another way or the default)."""
    text = raw.strip()
    if text.lower() == "auto":
        return None, True
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(
            setting, raw, "must be admissions per second (e.g. 50) or auto (find the rate)"
        ) from None
    return value, False


@dataclass(frozen=True)
class Settings:
    """All gateway settings. Field metadata names the parser used for env values."""

    mode: str = field(default="production", metadata={"help": "production, demo or test"})
    # Newest first: the first key signs, every key verifies (rotation).
    secret_keys: tuple[str, ...] = field(
        default=(), repr=False, metadata={"parse": parse_keys, "secret": True}
    )
    backend_secret: tuple[str, ...] = field(
        default=(), repr=False, metadata={"parse": parse_keys, "secret": True}
    )
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Redis with Sentinel or Cluster (waitroom/line/store.py): the sentinels (host:port,
    # comma-separated) and the name of the primary they watch; or the nodes of
    # redis_url as a cluster's seeds. Replicas that must hold a join, a ticket's
    # trade or an admin's change before it is answered (WAIT; -1: 1 with Sentinel
    # or Cluster, 0 otherwise), and how long to wait for them.
    redis_sentinels: str = ""
    redis_sentinel_master: str = ""
    redis_cluster: bool = False
    redis_wait_replicas: int = -1
    redis_wait_timeout_ms: int = 500
    backend_url: str = "http://127.0.0.1:8081"
    room: str = "results"
    # Admission: people per second, concurrency cap, pass lifetime. The rate is
    # the admin's: fixed, or with rate_auto the most the governor's search for the
    # backend's capacity may reach (10/s fixed by default, 1000/s with auto).
    rate: float = _AUTO
    rate_auto: bool = False
    # 500 by default; with rate_auto as many as the most rate admits in one
    # active window, so that the search, not the cap, finds the limit.
    max_active: int = _AUTO
    pass_ttl_s: int = 600
    # An admission counts against max_active for this long, used or not: students
    # who never come back (no-shows) free their slot without any cleanup.
    active_window_s: int = 60
    ticket_ttl_s: int = 12 * 3600
    # HTTP status of the waiting page: 200 keeps crawlers and proxies calm.
    waiting_status: int = 200
    # Secure cookies: on in production unless set (None until __post_init__ decides),
    # because a ticket or admin session sent over plain HTTP can be copied.
    cookie_secure: bool = _AUTO
    # How often each worker re-reads the frontier (the only Redis read for waiting).
    refresh_interval_s: float = 0.25
    pacer_tick_s: float = 0.1
    pacer_lease_s: float = 3.0
    backend_connect_timeout_s: float = 2.0
    backend_read_timeout_s: float = 10.0
    backend_pool_size: int = 100
    # The governor (waitroom/room/governor.py) lowers admission while the backend's p95
    # latency or error share passes these (0 turns the latency rule off), and
    # admits faster to make up for admitted students who never come.
    backend_p95_target_ms: float = 1000.0
    backend_error_target: float = 0.05
    noshow_compensation: bool = True
    # The admin page's password, as `waitroom hash-password` prints it; empty
    # turns the admin page off (demo mode makes a random password instead).
    admin_password_hash: str = field(default="", repr=False, metadata={"secret": True})
    admin_session_ttl_s: int = 8 * 3600
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    backlog: int = 2048
    server: str = "hypercorn"
    static_dir: str = ""
    # Abuse limits (waitroom.room.abuse). Lookups one admission pass buys (0: no limit):
    # a pass shared with many devices, or used to guess dates of birth, stops here.
    pass_max_lookups: int = 10
    # New places in line one client may take per window (0: no limit). Generous,
    # because a mobile carrier's NAT puts many students behind one IPv4 address.
    join_limit: int = 60
    join_window_s: int = 60
    # Places one client may hold in a scheduled release's pre-queue (0: only the
    # join limit). Far below join_limit: the pre-queue is shuffled at the release,
    # so every extra place is another draw for the front.
    prequeue_join_limit: int = 4
    # The origin's paths that wait in line (waitroom/shared/paths.py: /x exact, /x/* a
    # prefix); the admin page may change them. Other paths pass straight through.
    protected_paths: str = EVERYTHING
    # Paths whose requests count against a pass's lookups (pass_max_lookups).
    lookup_paths: str = RESULT_ROUTES
    # The largest request body forwarded to the origin (a file upload, say);
    # bigger ones get a 413 before the origin sees a byte.
    max_body_bytes: int = 8 * 1024 * 1024
    # A request body (a lookup form) must arrive within this: a body that trickles
    # in a byte at a time would otherwise hold a connection and a slot forever.
    body_timeout_s: float = 10.0
    # The board's time zone: the pages' times without JavaScript are shown in it.
    time_zone: str = "Asia/Kolkata"
    # Proxies whose X-Forwarded-For is believed (IPs or CIDRs); nobody's by default.
    trusted_proxies: tuple[str, ...] = field(default=(), metadata={"parse": _networks})

    def __post_init__(self) -> None:
        if self.cookie_secure is _AUTO:
            object.__setattr__(self, "cookie_secure", self.mode == "production")
        if self.rate is _AUTO:
            object.__setattr__(
                self, "rate", AUTO_RATE_MAX if self.rate_auto else FIXED_RATE_DEFAULT
            )
        if self.max_active is _AUTO:
            turnover = math.ceil(self.rate * self.active_window_s) if self.rate_auto else 0
            object.__setattr__(self, "max_active", max(MAX_ACTIVE_DEFAULT, turnover))
        _check(self)

    @property
    def production(self) -> bool:
        return self.mode == "production"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def line(self) -> LineSettings:
        """What the line in Redis reads (``waitroom.line.state.Queue``), and no more."""
        top = topology_of(self)
        return LineSettings(
            room=self.room,
            rate=self.rate,
            rate_auto=self.rate_auto,
            max_active=self.max_active,
            pass_ttl_s=self.pass_ttl_s,
            protected_paths=self.protected_paths,
            active_window_s=self.active_window_s,
            ticket_ttl_s=self.ticket_ttl_s,
            pacer_lease_s=self.pacer_lease_s,
            join_limit=self.join_limit,
            join_window_s=self.join_window_s,
            prequeue_join_limit=self.prequeue_join_limit,
            wait_replicas=top.wait_replicas,
            wait_timeout_ms=top.wait_timeout_ms,
        )

    def to_env(self) -> dict[str, str]:
        """The settings as ``WAITROOM_*`` variables, for worker processes to read back."""
        env = {}
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, tuple):
                text = ",".join(value)
            elif isinstance(value, bool):
                text = "1" if value else "0"
            else:
                text = str(value)
            env[ENV_PREFIX + spec.name.upper()] = text
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``WAITROOM_<FIELD>`` variables; keyword overrides (CLI flags) win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        rate_says_auto = False
        for spec in dataclasses.fields(cls):
            name = ENV_PREFIX + spec.name.upper()
            raw = read_secret(environ, name) if spec.metadata.get("secret") else environ.get(name)
            if raw is None:
                continue
            if spec.name == "rate":
                rate, rate_says_auto = parse_rate(name, raw)
                if rate is not None:
                    values["rate"] = rate
            else:
                values[spec.name] = _parse(spec, name, raw)
        if rate_says_auto:
            if values.get("rate_auto") is False:
                raise ConfigError(
                    ENV_PREFIX + "RATE_AUTO",
                    environ.get(ENV_PREFIX + "RATE_AUTO"),
                    "WAITROOM_RATE=auto says the opposite; set one of them",
                )
            values["rate_auto"] = True
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(spec: dataclasses.Field[Any], name: str, raw: str) -> Any:
    parser: Callable[[str], Any] = spec.metadata.get("parse") or {  # type: ignore[assignment]
        "str": str,
        "int": int,
        "float": float,
        "bool": _bool,
    }.get(str(spec.type), str)
    try:
        return parser(raw)
    except ValueError as exc:
        raise ConfigError(name, raw, f"not a valid {spec.type}: {exc}") from exc


def _check(s: Settings) -> None:
    def need(ok: bool, setting: str, value: object, reason: str) -> None:
        if not ok:
            raise ConfigError(ENV_PREFIX + setting.upper(), value, reason)

    need(s.mode in MODES, "mode", s.mode, f"must be one of {', '.join(MODES)}")
    need(bool(_ROOM_RE.match(s.room)), "room", s.room, "use 1-40 of a-z, 0-9, '-', '_'")
    need(s.rate > 0, "rate", s.rate, "admission rate must be > 0 people per second")
    need(
        math.isfinite(s.rate),
        "rate",
        s.rate,
        "must be a number of people per second (or auto)",
    )
    for name in ("protected_paths", "lookup_paths"):
        parse_rule(getattr(s, name), ENV_PREFIX + name.upper())
    need(s.max_body_bytes >= 1024, "max_body_bytes", s.max_body_bytes, "must be at least 1024")
    need(s.max_active >= 1, "max_active", s.max_active, "must be at least 1")
    need(s.pass_ttl_s >= 10, "pass_ttl_s", s.pass_ttl_s, "must be at least 10 seconds")
    need(s.active_window_s >= 5, "active_window_s", s.active_window_s, "must be at least 5 seconds")
    need(s.ticket_ttl_s >= 60, "ticket_ttl_s", s.ticket_ttl_s, "must be at least 60 seconds")
    need(
        s.waiting_status in (200, 202, 429),
        "waiting_status",
        s.waiting_status,
        "must be 200, 202 or 429",
    )
    need(
        0.02 <= s.refresh_interval_s <= 5,
        "refresh_interval_s",
        s.refresh_interval_s,
        "must be between 0.02 and 5 seconds",
    )
    need(
        0.01 <= s.pacer_tick_s <= 1,
        "pacer_tick_s",
        s.pacer_tick_s,
        "must be between 0.01 and 1 second",
    )
    need(
        s.pacer_lease_s >= 5 * s.pacer_tick_s,
        "pacer_lease_s",
        s.pacer_lease_s,
        "must be at least five pacer ticks",
    )
    need(
        s.backend_connect_timeout_s > 0,
        "backend_connect_timeout_s",
        s.backend_connect_timeout_s,
        "must be > 0",
    )
    need(
        s.backend_read_timeout_s > 0,
        "backend_read_timeout_s",
        s.backend_read_timeout_s,
        "must be > 0",
    )
    need(s.backend_pool_size >= 1, "backend_pool_size", s.backend_pool_size, "must be >= 1")
    need(1 <= s.port <= 65535, "port", s.port, "must be a TCP port, 1-65535")
    need(1 <= s.workers <= 64, "workers", s.workers, "must be between 1 and 64")
    need(
        s.backlog >= 128,
        "backlog",
        s.backlog,
        "must be at least 128; a spike needs thousands (default 2048)",
    )
    need(s.server in ("hypercorn", "granian"), "server", s.server, "must be hypercorn or granian")
    topology_of(s)  # a ConfigError naming the Redis setting that cannot be used
    need(
        s.backend_url.startswith("http://"),
        "backend_url",
        s.backend_url,
        "must be an http:// URL (the gateway-to-backend hop is a private link)",
    )
    need(
        s.backend_p95_target_ms >= 0,
        "backend_p95_target_ms",
        s.backend_p95_target_ms,
        "must be >= 0 (0 turns the latency rule off)",
    )
    need(
        0 < s.backend_error_target <= 1,
        "backend_error_target",
        s.backend_error_target,
        "must be a share above 0 and at most 1 (1 turns the error rule off)",
    )
    need(
        300 <= s.admin_session_ttl_s <= 7 * 86400,
        "admin_session_ttl_s",
        s.admin_session_ttl_s,
        "must be between 300 seconds and 7 days",
    )
    if s.admin_password_hash:
        try:
            check_hash_format(s.admin_password_hash)
        except ValueError as exc:
            need(
                False,
                "admin_password_hash",
                "<hidden>",
                f"{exc}; make one with: waitroom hash-password",
            )
    need(
        s.pass_max_lookups >= 0,
        "pass_max_lookups",
        s.pass_max_lookups,
        "must be 0 (no limit) or more lookups per pass",
    )
    need(s.join_limit >= 0, "join_limit", s.join_limit, "must be 0 (no limit) or more joins")
    need(
        s.prequeue_join_limit >= 0,
        "prequeue_join_limit",
        s.prequeue_join_limit,
        "must be 0 (only the join limit) or more places",
    )
    need(
        0 < s.body_timeout_s <= 600,
        "body_timeout_s",
        s.body_timeout_s,
        "must be more than 0 and at most 600 seconds",
    )
    try:
        zoneinfo.ZoneInfo(s.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        need(False, "time_zone", s.time_zone, "must be an IANA time zone, e.g. Asia/Kolkata")
    need(
        1 <= s.join_window_s <= 3600,
        "join_window_s",
        s.join_window_s,
        "must be between 1 and 3600 seconds",
    )
    for proxy in s.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            need(False, "trusted_proxies", proxy, "must be IP addresses or CIDR networks")
    hints = {
        "secret_keys": f"set WAITROOM_SECRET_KEYS or WAITROOM_SECRET_KEYS_FILE; make a key "
        f"with: {KEY_RECIPE}",
        "backend_secret": "use the lookup backend's WAITROOM_BACKEND_SECRET (or "
        "WAITROOM_BACKEND_SECRET_FILE)",
    }
    for name, hint in hints.items():
        keys: tuple[str, ...] = getattr(s, name)
        if s.production:
            check_keys(ENV_PREFIX + name.upper(), keys, hint)
        else:
            need(bool(keys), name, "", f"at least one key is needed; {hint}")
    if s.production:
        check_not_shared(s.backend_secret, s.secret_keys)

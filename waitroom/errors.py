"""The exceptions waitroom raises.

Each message carries the values involved, so a log line or a CLI error says what was
wrong and where. Transport errors from redis-py and the HTTP client are mapped to
these and chained with ``from exc`` so the cause stays visible in a traceback.
"""

from __future__ import annotations


class WaitroomError(Exception):
    """Base class of every error waitroom raises on purpose."""


class ConfigError(WaitroomError):
    """A setting is missing or has a value that cannot be used."""

    def __init__(self, setting: str, value: object, reason: str) -> None:
        self.setting = setting
        self.value = value
        self.reason = reason
        super().__init__(f"{setting}={value!r}: {reason}")


class EmbeddedRedisError(WaitroomError):
    """The embedded Redis server could not be found, started or reached."""


class StoreUnavailable(WaitroomError):
    """The shared store (Redis) did not answer; callers fall back to a calm page."""

    def __init__(self, operation: str, detail: str) -> None:
        self.operation = operation
        super().__init__(f"redis unavailable during {operation}: {detail}")


class BackendUnavailable(WaitroomError):
    """The lookup backend was down, too slow, or answered with a server error."""

    def __init__(self, url: str, detail: str) -> None:
        self.url = url
        super().__init__(f"lookup backend at {url} unavailable: {detail}")


class AdmissionError(WaitroomError):
    """An admission token was refused; the subclasses say why.

    Raised by ``waitroom.shared.admission``, which both servers use: the gateway
    signs the header, the lookup backend (or any origin) checks it.
    """


class AdmissionMissing(AdmissionError):
    """The request carried no admission token."""


class AdmissionExpired(AdmissionError):
    """The token was signed by a known key but is older than the allowed age."""

    def __init__(self, age_s: float, max_age_s: int) -> None:
        self.age_s = age_s
        self.max_age_s = max_age_s
        super().__init__(f"admission token expired: {age_s:.1f} s old, limit {max_age_s} s")


class AdmissionInvalid(AdmissionError):
    """The token was malformed or not signed by any of the configured keys."""

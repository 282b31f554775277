"""The signed admission header the gateway sends and the backend checks.

The gateway signs ``(room, pass_id)`` for each request it forwards; the backend
refuses any request without a fresh, valid signature, so nobody skips the line by
calling the backend directly. Tokens live seconds, not minutes: they only have to
survive the hop from the gateway to the backend.

Key rotation: callers list keys newest first. The newest signs; every listed key
verifies. itsdangerous wants the opposite order (oldest first, the last one signs),
so the list is reversed here and nowhere else.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from itsdangerous import BadData, SignatureExpired, URLSafeTimedSerializer

from lookup.errors import AdmissionExpired, AdmissionInvalid, AdmissionMissing

HEADER = "X-Waitroom-Admission"
HEADER_BYTES = HEADER.lower().encode("ascii")  # ASGI header names are lower-case bytes
SALT = "waitroom.admission"
DEFAULT_MAX_AGE_S = 30
_CACHE_SIZE = 10_000
_MAX_TOKEN_CHARS = 512


@dataclass(frozen=True, slots=True)
class AdmissionClaim:
    room: str
    pass_id: str
    issued_at: float  # Unix time the gateway signed it


class AdmissionSigner:
    """Signs and verifies admission tokens with a newest-first list of secret keys."""

    def __init__(self, keys: Sequence[str], max_age_s: int = DEFAULT_MAX_AGE_S) -> None:
        keys = [k for k in keys if k]
        if not keys:
            raise ValueError("AdmissionSigner needs at least one non-empty secret key")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be positive, got {max_age_s}")
        self.max_age_s = max_age_s
        self._serializer = URLSafeTimedSerializer(list(reversed(keys)), salt=SALT)
        # token -> (claim, deadline): verifying costs tens of microseconds, a dict
        # hit under one; a cached token still expires at its own deadline.
        self._cache: dict[str, tuple[AdmissionClaim, float]] = {}

    def __repr__(self) -> str:  # never show the keys
        return f"AdmissionSigner(keys=<hidden>, max_age_s={self.max_age_s})"

    def sign(self, room: str, pass_id: str) -> str:
        return self._serializer.dumps([room, pass_id])

    def verify(self, token: str | None) -> AdmissionClaim:
        """The claim in a valid, unexpired token; raises an AdmissionError otherwise."""
        if not token:
            raise AdmissionMissing(f"no {HEADER} header")
        now = time.time()
        hit = self._cache.get(token)
        if hit is not None:
            claim, deadline = hit
            if now <= deadline:
                return claim
            del self._cache[token]
            raise AdmissionExpired(now - claim.issued_at, self.max_age_s)
        if len(token) > _MAX_TOKEN_CHARS:
            raise AdmissionInvalid(f"admission token too long: {len(token)} characters")
        try:
            payload, signed_at = self._serializer.loads(
                token, max_age=self.max_age_s, return_timestamp=True
            )
        except SignatureExpired as exc:
            age = now - exc.date_signed.timestamp() if exc.date_signed else float("nan")
            raise AdmissionExpired(age, self.max_age_s) from None
        except BadData as exc:
            raise AdmissionInvalid(f"admission token rejected: {type(exc).__name__}") from None
        if (
            not isinstance(payload, list)
            or len(payload) != 2
            or not all(isinstance(p, str) for p in payload)
        ):
            raise AdmissionInvalid(f"admission token payload has the wrong shape: {payload!r}")
        claim = AdmissionClaim(payload[0], payload[1], signed_at.timestamp())
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = (claim, claim.issued_at + self.max_age_s)
        return claim

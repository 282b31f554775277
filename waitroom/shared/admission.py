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
from typing import Any

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

from waitroom.errors import AdmissionExpired, AdmissionInvalid, AdmissionMissing

HEADER = "X-Waitroom-Admission"
HEADER_BYTES = HEADER.lower().encode("ascii")  # ASGI header names are lower-case bytes
# Marks a 403 as the backend refusing the admission header (a secret mismatch), not
# a page that says "forbidden": the gateway shows its busy page for the one and
# passes the other on. Stripped before any answer leaves the gateway.
REFUSED_HEADER = "X-Waitroom-Refused"
REFUSED_HEADER_BYTES = REFUSED_HEADER.lower().encode("ascii")
SALT = "waitroom.admission"
DEFAULT_MAX_AGE_S = 30
# Gateway and backend clocks may disagree by this much without refusing tokens.
CLOCK_SKEW_S = 10
_CACHE_SIZE = 10_000
_MAX_TOKEN_CHARS = 512


class _KeyCachingSigner(TimestampSigner):
    """itsdangerous' TimestampSigner with each key's derived key computed once.

    The stock signer derives (hashes) every key again on every verification; with
    a fresh token per forwarded request that was a visible share of a lookup.
    Signature checking itself, constant-time comparison included, is untouched.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[bytes, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        raw = self.secret_keys[-1] if secret_key is None else _as_bytes(secret_key)
        derived = self._derived.get(raw)
        if derived is None:
            derived = self._derived[raw] = super().derive_key(raw)
        return derived


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


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
        # Exactly what URLSafeTimedSerializer(keys, salt=SALT).dumps/loads do, but
        # with one signer holding every key (tried newest first) built once instead
        # of once per verification; the serializer only packs the payload.
        self._serializer = URLSafeTimedSerializer(list(reversed(keys)), salt=SALT)
        self._signer = _KeyCachingSigner(list(reversed(keys)), salt=SALT)
        # token -> (claim, deadline): verifying costs tens of microseconds, a dict
        # hit under one; a cached token still expires at its own deadline.
        self._cache: dict[str, tuple[AdmissionClaim, float]] = {}
        self._reused: dict[tuple[str, str], tuple[str, float]] = {}

    def __repr__(self) -> str:  # never show the keys
        return f"AdmissionSigner(keys=<hidden>, max_age_s={self.max_age_s})"

    def sign(self, room: str, pass_id: str) -> str:
        payload = self._serializer.dump_payload([room, pass_id])
        return self._signer.sign(payload).decode("ascii")

    def reusable(self, room: str, subject: str) -> str:
        """A token for ``(room, subject)``, signed afresh only every sixth of its life.

        The gateway sends one per forwarded request. Re-using it for a few seconds
        costs no security (it never leaves the gateway-to-backend hop) and turns the
        backend's check into a cache hit instead of an HMAC: about a third of a
        lookup's own cost.
        """
        now = time.monotonic()
        key = (room, subject)
        held = self._reused.get(key)
        if held is None or now - held[1] > self.max_age_s / 6:
            held = self._reused[key] = (self.sign(room, subject), now)
        return held[0]

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
            # Age is judged below, not by itsdangerous: it rejects a timestamp from
            # the future, so a gateway clock one second ahead would bounce every time.
            value, signed_at = self._signer.unsign(token, return_timestamp=True)
            payload = self._serializer.load_payload(value)
        except BadData as exc:
            raise AdmissionInvalid(f"admission token rejected: {type(exc).__name__}") from None
        age = now - signed_at.timestamp()
        if age > self.max_age_s:
            raise AdmissionExpired(age, self.max_age_s)
        if age < -CLOCK_SKEW_S:
            raise AdmissionInvalid(f"admission token signed {-age:.0f} s in the future")
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

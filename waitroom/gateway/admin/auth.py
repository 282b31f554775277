"""Admin access: password hashes, sessions, CSRF tokens and the login throttle.

- The password is configured only as a hash (``waitroom.shared.passwords``), checked in
  a thread so its 50 ms of work does not stall the loop that serves students.
- A session is a signed cookie (its own salt, the gateway's key list, an expiry)
  naming a session record in Redis; logging out deletes the record, so a copied
  cookie dies with the session. Each login makes a new session id (no fixation).
- Every state-changing request carries the session's CSRF token, compared in
  constant time. The login form has its own token (a signed double-submit cookie).
- Login attempts are counted per address and overall in Redis before the
  password is checked, in one atomic step (``login.lua``): at most
  ``MAX_FAILURES`` checks per address per window however many guesses arrive at
  once, and an overall slow-down, across every gateway node. The address is the
  client as the join limit sees it (``waitroom.room.abuse.client_address``), so
  behind a trusted balancer one student cannot lock everyone out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from itsdangerous import BadData, URLSafeTimedSerializer

from waitroom.line.keys import RoomKeys
from waitroom.line.scripts import LOGIN
from waitroom.line.store import Client, guard
from waitroom.shared.passwords import verify_password

# The login form's token (and its cookie) lasts an hour.
LOGIN_TOKEN_TTL_S = 3600
# Login attempts: per address, at most MAX_FAILURES password checks within the
# window (a success clears the count); overall, every attempt beyond SLOW_AFTER
# checks waits SLOW_DOWN_S first.
FAILURE_WINDOW_S = 15 * 60
MAX_FAILURES = 5
SLOW_AFTER = 50
SLOW_DOWN_S = 1.0


def same(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two secrets; a missing one never matches."""
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Attempt:
    """A login attempt, counted: whether its password may be checked."""

    allowed: bool
    retry_after_s: int  # while locked out
    # Allowed: password checks from every address before this one in the window;
    # refused: attempts from this address in the window (this one included).
    count: int

    @property
    def slowed(self) -> bool:
        return self.allowed and self.count >= SLOW_AFTER

    @property
    def first_refused(self) -> bool:
        """The attempt that found the lock-out (later ones are not worth a log line)."""
        return not self.allowed and self.count == MAX_FAILURES + 1


@dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    address: str
    started_at: float

    @property
    def tag(self) -> str:
        """A name for the session in the audit log that reveals nothing usable."""
        return hashlib.sha256(self.id.encode()).hexdigest()[:10]


class AdminAuth:
    def __init__(
        self,
        client: Client,
        keys: RoomKeys,
        secret_keys: tuple[str, ...],
        session_ttl_s: int,
    ) -> None:
        self.client = client
        self.keys = keys
        self.session_ttl_s = session_ttl_s
        signing = list(reversed(secret_keys))  # itsdangerous signs with the last
        self._sessions = URLSafeTimedSerializer(signing, salt="waitroom.admin.session")
        self._login = URLSafeTimedSerializer(signing, salt="waitroom.admin.login")

    # -- sessions -----------------------------------------------------------------

    async def start(self, address: str) -> tuple[Session, str]:
        session = Session(
            secrets.token_urlsafe(18), secrets.token_urlsafe(24), address, time.time()
        )
        record = json.dumps(
            {"csrf": session.csrf, "address": address, "started_at": session.started_at}
        )
        key = self.keys.admin_session(session.id)
        await guard(
            self.client, "start session", self.client.set(key, record, ex=self.session_ttl_s)
        )
        return session, self._sessions.dumps(session.id)

    async def load(self, token: str | None) -> Session | None:
        if not token:
            return None
        try:
            session_id = self._sessions.loads(token, max_age=self.session_ttl_s)
        except BadData:
            return None
        if not isinstance(session_id, str):
            return None
        raw = await guard(
            self.client, "read session", self.client.get(self.keys.admin_session(session_id))
        )
        if raw is None:
            return None  # logged out, or expired in Redis
        record = json.loads(raw)
        return Session(session_id, record["csrf"], record["address"], record["started_at"])

    async def end(self, session: Session) -> None:
        await guard(
            self.client, "end session", self.client.delete(self.keys.admin_session(session.id))
        )

    # -- the login form's CSRF token -------------------------------------------------

    def login_token(self) -> tuple[str, str]:
        """(form value, cookie value) for a login form."""
        value = secrets.token_urlsafe(18)
        return value, self._login.dumps(value)

    def login_token_ok(self, form_value: str | None, cookie: str | None) -> bool:
        if not cookie:
            return False
        try:
            expected = self._login.loads(cookie, max_age=LOGIN_TOKEN_TTL_S)
        except BadData:
            return False
        return isinstance(expected, str) and same(form_value, expected)

    # -- throttle -------------------------------------------------------------------

    async def attempt(self, address: str) -> Attempt:
        """Count a login attempt from ``address`` before its password is checked."""
        keys = [self.keys.login_failures(address), self.keys.login_failures("*")]
        allowed, retry_after_s, count = await LOGIN(
            self.client, keys, [FAILURE_WINDOW_S, MAX_FAILURES]
        )
        return Attempt(allowed, retry_after_s, count)

    async def slow_down(self, attempt: Attempt) -> None:
        if attempt.slowed:
            await asyncio.sleep(SLOW_DOWN_S)

    async def succeeded(self, address: str) -> None:
        await guard(
            self.client, "clear failures", self.client.delete(self.keys.login_failures(address))
        )


async def verify_password_async(password: str, encoded: str) -> bool:
    return await asyncio.to_thread(verify_password, password, encoded)

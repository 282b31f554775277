"""Property tests: no altered, truncated or foreign admin token is ever honoured."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeTimedSerializer

from tests.support.gateway_support import TEST_KEYS
from waitroom.gateway.admin.auth import AdminAuth, same
from waitroom.line.keys import RoomKeys
from waitroom.line.state import connect

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mutations() -> st.SearchStrategy[tuple[str, int, str]]:
    return st.tuples(
        st.sampled_from(["flip", "truncate", "append", "wrong-key"]),
        st.integers(min_value=0, max_value=200),
        st.text(
            alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.",
            min_size=1,
            max_size=8,
        ),
    )


def _mutate(token: str, session_id: str, how: tuple[str, int, str]) -> str:
    kind, at, extra = how
    i = at % len(token)
    if kind == "flip":
        # Not the last character: its low bits are base64 padding, so some flips
        # there decode to the very same signature (the same token, not a forgery).
        i = at % (len(token) - 1)
        replacement = "A" if token[i] != "A" else "B"
        return token[:i] + replacement + token[i + 1 :]
    if kind == "truncate":
        return token[:i]
    if kind == "append":
        return token + extra
    # A well-formed token for the same session, signed with a key we do not hold.
    foreign = URLSafeTimedSerializer(["not-our-key-" + extra], salt="waitroom.admin.session")
    return foreign.dumps(session_id)


@FAST
@given(how=_mutations())
def test_no_altered_session_cookie_opens_the_admin(
    redis_url: str, how: tuple[str, int, str]
) -> None:
    async def check() -> None:
        client = connect(redis_url)
        try:
            auth = AdminAuth(client, RoomKeys("props"), TEST_KEYS, 600)
            session, token = await auth.start("127.0.0.1")
            assert (await auth.load(token)) == session  # the real one works
            forged = _mutate(token, session.id, how)
            if forged != token:
                assert await auth.load(forged) is None
            await auth.end(session)
            assert await auth.load(token) is None  # and dies with its session
        finally:
            await client.aclose()

    asyncio.run(check())


@FAST
@given(guess=st.text(max_size=64))
def test_no_other_csrf_token_matches(guess: str) -> None:
    real = "x" * 32
    assert same(guess, real) == (guess == real)
    assert not same(guess, None) and not same(None, guess)


@FAST
@given(how=_mutations())
def test_no_altered_login_form_token_is_accepted(redis_url: str, how: tuple[str, int, str]) -> None:
    # The form token needs no Redis: a client that is never used opens nothing.
    auth = AdminAuth(connect(redis_url), RoomKeys("props"), TEST_KEYS, 600)
    value, cookie = auth.login_token()
    assert auth.login_token_ok(value, cookie)
    forged = _mutate(cookie, value, how)
    if forged != cookie:
        assert not auth.login_token_ok(value, forged)
    other_value, _ = auth.login_token()
    assert not auth.login_token_ok(other_value, cookie)  # a token from another form

"""Property-based tests of tickets and passes: nothing but what the gateway signed, as
it signed it, is ever honoured; a spent ticket buys nothing; a pass buys its limit.

Signing runs in process (the signer is pure); spending and counting run against the
real Redis, through the same scripts the gateway uses.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from tests.support.gateway_support import TEST_KEYS, make_settings
from waitroom.gateway.services import make_limits, make_signer, make_view
from waitroom.line.state import Queue
from waitroom.room.tickets import CLOCK_SKEW_S, TicketRejected, TicketSigner

SETTINGS = make_settings("redis://127.0.0.1:6379/0", pass_ttl_s=600)
SIGNER = make_signer(SETTINGS)
FAST = settings(max_examples=150, deadline=None)
WITH_REDIS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."

positions = st.integers(min_value=1, max_value=10**9)
epochs = st.text("0123456789abcdef", min_size=8, max_size=8)


def _fresh_signer() -> TicketSigner:
    # Each check on its own signer: the verified-token cache must not hide a thing.
    return make_signer(SETTINGS)


@st.composite
def mutations(draw: st.DrawFn, token: str) -> str:
    """The token altered as a tamperer or a broken client would alter it."""
    kind = draw(st.sampled_from(["replace", "insert", "delete", "truncate", "append", "swap"]))
    # Positions drawn independently of the token (which differs run to run), then fitted.
    i = draw(st.integers(min_value=0, max_value=10**6)) % len(token)
    char = draw(st.sampled_from(TOKEN_ALPHABET + "=%+/ é\x00"))
    if kind == "replace":
        return token[:i] + char + token[i + 1 :]
    if kind == "insert":
        return token[:i] + char + token[i:]
    if kind == "delete":
        return token[:i] + token[i + 1 :]
    if kind == "truncate":
        return token[:i]
    if kind == "append":
        return token + draw(st.text(TOKEN_ALPHABET, min_size=1, max_size=8))
    j = draw(st.integers(min_value=0, max_value=10**6)) % len(token)
    chars = list(token)
    chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


@FAST
@given(position=positions, epoch=epochs, frontier=st.integers(0, 10**9), data=st.data())
def test_an_altered_ticket_is_never_a_different_ticket(
    position: int, epoch: str, frontier: int, data: st.DataObject
) -> None:
    original, token = SIGNER.issue_ticket(position, epoch, frontier)
    altered = data.draw(mutations(token))
    try:
        ticket = _fresh_signer().read_ticket(altered, epoch)
    except TicketRejected as exc:
        assert exc.reason in ("garbled", "tampered")
        return
    # Base64's unused low bits can change without changing a byte: the same ticket.
    assert ticket == original


@FAST
@given(epoch=epochs, data=st.data())
def test_an_altered_pass_is_never_a_different_pass(epoch: str, data: st.DataObject) -> None:
    original, token = SIGNER.issue_pass(secrets.token_urlsafe(9), epoch)
    altered = data.draw(mutations(token))
    try:
        admission = _fresh_signer().read_pass(altered)
    except TicketRejected as exc:
        assert exc.reason in ("garbled", "tampered")
        return
    assert (admission.id, admission.epoch) == (original.id, original.epoch)


def _sign(keys: list[str], salt: str, payload: Any, age_s: float = 0) -> str:
    class Clocked(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time() - age_s)

    return URLSafeTimedSerializer(keys, salt=salt, signer=Clocked).dumps(payload)


@FAST
@given(
    key=st.text(min_size=1, max_size=64).filter(lambda k: k not in TEST_KEYS),
    position=positions,
    epoch=epochs,
    kind=st.sampled_from(["ticket", "pass"]),
)
def test_a_token_signed_with_any_other_key_is_refused(
    key: str, position: int, epoch: str, kind: str
) -> None:
    if kind == "ticket":
        forged = _sign([key], "waitroom.ticket", ["results", position, "id", epoch, 0])
        read: Any = _fresh_signer().read_ticket
    else:
        forged = _sign([key], "waitroom.pass", ["results", "id", epoch])
        read = _fresh_signer().read_pass
    try:
        read(forged)
    except TicketRejected as exc:
        assert exc.reason == "tampered"
    else:
        raise AssertionError("a token signed with a foreign key was honoured")


@FAST
@given(position=positions, epoch=epochs)
def test_a_ticket_is_no_pass_and_a_pass_no_ticket(position: int, epoch: str) -> None:
    _, ticket = SIGNER.issue_ticket(position, epoch, 0)
    _, admission = SIGNER.issue_pass("id", epoch)
    signer = _fresh_signer()
    for call, token in ((signer.read_pass, ticket), (signer.read_ticket, admission)):
        try:
            call(token)
        except TicketRejected as exc:
            assert exc.reason == "tampered"
        else:
            raise AssertionError("one kind of token was honoured as the other")


@FAST
@given(
    # The signing node's clock minus the checking node's, and the token's true age.
    skew_s=st.integers(min_value=-120, max_value=120),
    age_s=st.integers(min_value=0, max_value=700),
    kind=st.sampled_from(["ticket", "pass"]),
)
@example(skew_s=CLOCK_SKEW_S, age_s=0, kind="pass")
@example(skew_s=CLOCK_SKEW_S + 2, age_s=0, kind="ticket")
@example(skew_s=-5, age_s=596, kind="pass")
def test_expiry_is_judged_by_one_rule_whatever_the_clocks(
    skew_s: int, age_s: int, kind: str
) -> None:
    """A token signed by a node whose clock is off by ``skew_s`` is honoured exactly
    while its apparent age is within its lifetime, and refused as forged only when it
    claims to come from more than CLOCK_SKEW_S in the future. One-second margins
    around each edge leave room for the test's own passing time.
    """
    ttl = SETTINGS.ticket_ttl_s if kind == "ticket" else SETTINGS.pass_ttl_s
    apparent_age = age_s - skew_s
    if kind == "ticket":
        payload: Any = ["results", 5, "id", "e", 0]
        token = _sign(list(reversed(TEST_KEYS)), "waitroom.ticket", payload, apparent_age)
        read: Any = _fresh_signer().read_ticket
    else:
        token = _sign(
            list(reversed(TEST_KEYS)), "waitroom.pass", ["results", "id", "e"], apparent_age
        )
        read = _fresh_signer().read_pass
    if -CLOCK_SKEW_S + 1 < apparent_age < ttl - 1:
        read(token)
    elif apparent_age < -CLOCK_SKEW_S - 1 or apparent_age > ttl + 1:
        try:
            read(token)
        except TicketRejected as exc:
            assert exc.reason == ("tampered" if apparent_age < 0 else "expired")
        else:
            raise AssertionError(f"honoured at apparent age {apparent_age}")


@WITH_REDIS
@given(copies=st.integers(min_value=2, max_value=6))
async def test_a_spent_ticket_buys_exactly_one_pass(
    redis_client: aioredis.Redis, redis_url: str, copies: int
) -> None:
    queue = Queue(redis_client, make_settings(redis_url).line())
    ticket_id = secrets.token_urlsafe(9)
    outcomes = [await queue.spend(ticket_id) for _ in range(copies)]
    assert outcomes == [True] + [False] * (copies - 1)
    ttl = await redis_client.ttl(queue.keys.spent(ticket_id))
    assert 0 < ttl <= queue.settings.ticket_ttl_s


@WITH_REDIS
@given(
    limit=st.integers(min_value=1, max_value=6),
    # The backend's answer to each attempt: None when it could not answer at all.
    answers=st.lists(st.sampled_from([200, 303, 404, 400, 405, 413, 415, 503, None]), max_size=25),
)
async def test_a_pass_buys_its_limit_of_lookups_and_no_more(
    redis_client: aioredis.Redis, redis_url: str, limit: int, answers: list[int | None]
) -> None:
    settings_ = make_settings(redis_url, pass_max_lookups=limit)
    queue = Queue(redis_client, settings_.line())
    view = make_view(queue, settings_)
    view.healthy = True  # as after its first read
    limits = make_limits(redis_client, view, settings_)
    pass_id = secrets.token_urlsafe(9)
    made = 0  # lookups the backend made with this pass, by the model
    for answer in answers:
        verdict = await limits.take_lookup(pass_id)
        assert verdict.allowed == (made < limit), (made, limit, verdict)
        if verdict.allowed:
            await limits.settle(pass_id, verdict, answer)
            # A marksheet, a redirect to one, or "no such result" is a lookup made.
            made += answer in (200, 303, 404)
    assert made <= limit
    ttl = await redis_client.pttl(limits.keys.lookups(pass_id))
    assert ttl == -2 or 0 < ttl <= (settings_.pass_ttl_s + CLOCK_SKEW_S) * 1000


@settings(max_examples=200, deadline=None)
@given(position=st.integers(1, 10**12), epoch=st.text(min_size=1, max_size=12))
def test_tickets_and_passes_are_what_itsdangerous_writes_and_reads(
    position: int, epoch: str
) -> None:
    """Issued without zlib's attempt (never shorter at this size), read by any
    URLSafeTimedSerializer with the same keys and salt, and the other way round."""
    signer = make_signer(make_settings("redis://127.0.0.1:1/0"))
    ticket, token = signer.issue_ticket(position, epoch, 0)
    assert not token.startswith(".")  # a compressed payload would start so
    reference = URLSafeTimedSerializer(list(reversed(TEST_KEYS)), salt="waitroom.ticket")
    assert reference.loads(token) == ["results", position, ticket.id, epoch, 0]
    theirs = reference.dumps(["results", position, "x" * 12, epoch, 0])
    assert signer.read_ticket(theirs).position == position
    _, pass_token = signer.issue_pass(ticket.id, epoch)
    passes = URLSafeTimedSerializer(list(reversed(TEST_KEYS)), salt="waitroom.pass")
    assert passes.loads(pass_token) == ["results", ticket.id, epoch]

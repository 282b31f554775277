"""A fair start for a scheduled release: the pre-queue's random order.

Students who arrive before the release time T get ordinary positions from the
room's counter, but those positions only say *that* they came before T. At T the
block of pre-queue positions ``(base, base + size]`` is put in a random order by a
keyed permutation: the student with pre-queue position ``base + k`` gets the place
``base + permute(seed, size, k)``. Everyone who arrives after T keeps their
position as their place, behind the whole pre-queue.

Nothing per student is stored: the seed, ``base`` and ``size`` decide every place,
so any gateway computes it from the ticket alone, and an auditor can recompute the
whole order from the seed that the admin page records (``waitroom release-order``).
Before T only a SHA-256 commitment to the seed is public, so nobody can choose an
arrival time that lands a good place, and anyone can check afterwards that the
seed was not changed once the pre-queue was known.

The permutation is a four-round Feistel network keyed by HMAC-SHA256 over the
smallest even power of two that covers ``size``, with cycle-walking back into
range: a bijection on ``1..size`` that costs a few HMACs per lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import lru_cache

ROUNDS = 4


def new_seed() -> str:
    return secrets.token_hex(16)


def commitment(seed: str) -> str:
    """What is published before the release: proves the seed was fixed in advance."""
    return hashlib.sha256(seed.encode()).hexdigest()


def public_info(at_ms: int, seed: str, base: int, released_n: int | None) -> dict[str, object]:
    """What anyone may know of a scheduled release (the public state, the admin's
    live view): the seed only once it is too late to use it (after the release),
    before that a commitment to it."""
    info: dict[str, object] = {"at_ms": at_ms, "prequeue_from": base + 1}
    if released_n is None:
        info["seed_sha256"] = commitment(seed)
    else:
        info["prequeue_to"] = released_n
        info["seed"] = seed
    return info


@lru_cache(maxsize=65_536)
def permute(seed: str, size: int, k: int) -> int:
    """The place (1..size) of pre-queue position ``k`` (1..size) in the release order."""
    if not 1 <= k <= size:
        raise ValueError(f"pre-queue position {k} outside 1..{size}")
    if size == 1:
        return 1
    half_bits = max(1, ((size - 1).bit_length() + 1) // 2)
    key = seed.encode()
    x = k - 1
    while True:  # cycle-walk: a value outside the range is permuted again
        x = _feistel(key, half_bits, x)
        if x < size:
            return x + 1


def order(seed: str, size: int) -> list[int]:
    """Pre-queue positions (1..size) in the order they are admitted: for an audit."""
    by_place = [0] * size
    for k in range(1, size + 1):
        by_place[permute(seed, size, k) - 1] = k
    return by_place


def _feistel(key: bytes, half_bits: int, x: int) -> int:
    mask = (1 << half_bits) - 1
    left, right = x >> half_bits, x & mask
    for round_ in range(ROUNDS):
        digest = hmac.new(key, f"{round_}:{right}".encode(), hashlib.sha256).digest()
        left, right = right, left ^ (int.from_bytes(digest[:8], "big") & mask)
    return (left << half_bits) | right

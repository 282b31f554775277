"""Arrival curves: when each simulated student turns up, in seconds from the start.

Every curve is drawn from a seeded generator, so a rerun sees the same crowd.
"""

from __future__ import annotations

import math
import random


def spawn(users: int, per_second: float) -> list[float]:
    """Locust's spawn: one user every ``1 / per_second`` seconds (the seed document)."""
    return [i / per_second for i in range(users)]


def spike(students: int, within_s: float, seed: int = 1) -> list[float]:
    """A burst: ``students`` at uniformly random moments within ``within_s`` seconds."""
    rng = random.Random(seed)
    return sorted(rng.uniform(0, within_s) for _ in range(students))


def release(
    students: int,
    *,
    release_at_s: float,
    tail_s: float,
    early_share: float = 0.1,
    until_s: float | None = None,
    seed: int = 1,
) -> list[float]:
    """A result release: a few early birds, a sharp peak at the release, a long tail.

    ``early_share`` of the crowd arrives in the minute (at most) before the release,
    refreshing for the announcement; the rest after it, the arrival rate falling
    exponentially with time constant ``tail_s`` (news spreads, schools forward the
    link), cut at ``until_s`` (the tail is redrawn, not piled at the cut).
    """
    rng = random.Random(seed)
    end = until_s if until_s is not None else release_at_s + 6 * tail_s
    lead = min(60.0, release_at_s)
    early = round(students * early_share)
    out = [rng.uniform(release_at_s - lead, release_at_s) for _ in range(early)]
    # Inverse CDF of an exponential truncated at `end`, so no draw is wasted.
    span = max(end - release_at_s, 1e-9)
    cut = 1 - math.exp(-span / tail_s)
    out += [
        release_at_s - tail_s * math.log(1 - rng.random() * cut) for _ in range(students - early)
    ]
    return sorted(out)


def per_second(arrivals: list[float]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for t in arrivals:
        counts[int(t)] = counts.get(int(t), 0) + 1
    return counts

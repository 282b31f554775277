"""Request factories for the load generator: run in its forked process, cheap per call.

Constant requests with one answer in ``CHECK_EVERY`` checked (checking every
answer would spend the loader's CPU on the very thing being measured), and lookups
of real sample candidates, precomputed (generating one per request would load the
loader too), each checked answer compared byte for byte with the generator's
marksheet.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from stress.benches.servers import ROOM
from stress.harness.loadgen import Request, RequestFactory, http_request
from waitroom.lookup import sample
from waitroom.shared.admission import HEADER, AdmissionSigner

# Checking every answer would spend loader CPU on the very thing being measured.
CHECK_EVERY = 16
# Precomputed candidates: generating one per request would load the loader too.
POOL = 4096


def every(request: Request, checked: Request) -> RequestFactory:
    counter = iter(range(1 << 62))

    def factory() -> Request:
        return checked if next(counter) % CHECK_EVERY == 0 else request

    return factory


def constant(
    path: str, headers: dict[str, str], check: Callable[[int, bytes], bool]
) -> RequestFactory:
    raw = http_request("GET", path, headers=headers)
    return every(Request(raw), Request(raw, check))


@dataclass(frozen=True)
class Lookup:
    body: bytes
    expected: bytes


def lookups_of(seed: int, students: int) -> list[Lookup]:
    rng = random.Random(seed ^ 0x5EED)
    out = []
    for k in rng.sample(range(students), min(POOL, students)):
        sheet = sample.candidate(seed, k)
        body = json.dumps({"roll": sheet.roll, "dob": sheet.dob.isoformat()}).encode()
        out.append(Lookup(body, sheet.to_json()))
    return out


class LookupFactory:
    """POST /api/result for a random candidate, with a pass cookie or an admission header.

    The direct requests carry an admission token re-signed once a second, which is
    what the gateway sends for one pass (itsdangerous stamps whole seconds): the
    backend does the same verification work on both paths.
    """

    def __init__(
        self, lookups: list[Lookup], *, cookie: str = "", signer: AdmissionSigner | None = None
    ) -> None:
        self.lookups = lookups
        self.cookie = cookie
        self.signer = signer
        self.rng = random.Random(1)
        self.count = 0
        self.second = -1
        self.token = ""

    def __call__(self) -> Request:
        item = self.lookups[self.rng.randrange(len(self.lookups))]
        headers = {"Content-Type": "application/json"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if self.signer is not None:
            now = int(time.time())
            if now != self.second:
                self.second, self.token = now, self.signer.sign(ROOM, "bench-pass")
            headers[HEADER] = self.token
        raw = http_request("POST", "/api/result", headers=headers, body=item.body)
        self.count += 1
        if self.count % CHECK_EVERY:
            return Request(raw)
        expected = item.expected
        return Request(raw, lambda status, body: status == 200 and body == expected)

"""The student's journey for locust users (``pip install 'waitroom[locust]'``).

Mirrors ``stress.journeys.student``'s browser journey: load ``/``, wait on the progress page
polling as ``static/waitroom.js`` does (``/queue/state`` far from the front,
``/status`` near it, the server's intervals with the page's jitter), then submit
a real candidate's roll number and date of birth and check that the marksheet is
theirs. Each user is one student: after the result it leaves. Run against a
gateway started with the same sample data (``waitroom demo`` uses seed 2026)::

    locust -f stress/journeys/locustfile.py --host http://127.0.0.1:8080 \
        --users 7000 --spawn-rate 700

Set ``WAITROOM_CANDIDATES`` to the sample's size (default 100,000). The figures
of ``python -m stress`` are the project's own; this file is for teams whose
dashboards already run on locust.
"""

from __future__ import annotations

import html
import os
import random
import re
import time
from typing import Any

from locust import HttpUser, between, task
from locust.exception import StopUser

from waitroom.lookup import sample

CANDIDATES = int(os.environ.get("WAITROOM_CANDIDATES", "100000"))
_POSITION = re.compile(r'data-position="(\d+)"')
_EPOCH = re.compile(r'data-epoch="([^"]*)"')
_RETRY = re.compile(r'data-retry="(\d+)"')
_RELEASE = re.compile(r'data-release="(\d+)"')
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}


class Student(HttpUser):
    wait_time = between(0, 1)  # the seed document's 0-1 s between requests

    def on_start(self) -> None:
        self.sheet = sample.candidate(sample.DEFAULT_SEED, random.randrange(CANDIDATES))

    def _page(self) -> str:
        """``GET /`` until it is the progress page or the lookup form."""
        while True:
            with self.client.get("/", headers=HTML, catch_response=True) as r:
                if r.status_code == 200:
                    return str(r.text)
                r.success()  # a calm 503 is the waiting room working; locust times it
                time.sleep(float(r.headers.get("Retry-After", "5")))

    def _prequeue(self, release_at_ms: int) -> str:
        """Before a scheduled release: count down, then ask until the place is drawn."""
        time.sleep(max(0.0, release_at_ms / 1000 - time.time()) + random.uniform(1, 5))
        while True:
            r = self.client.get("/status", headers=JSON)
            j: dict[str, Any] = r.json() if r.ok else {}
            if r.ok and j.get("state") != "prequeue":
                return self._page()
            time.sleep(min(float(j.get("retry_after_s") or 5), 5.0) * random.uniform(0.8, 1.2))

    def _wait(self, page: str) -> str:
        """What waitroom.js does until the student's turn; returns the page after."""
        release = _RELEASE.findall(page)
        if release:
            return self._prequeue(int(release[0]))
        position = int(_POSITION.findall(page)[0])
        epoch = _EPOCH.findall(page)[0]
        retry = _RETRY.findall(page)
        delay = float(retry[0]) if retry else 5.0
        rate, ahead = 1.0, float(position)
        while True:
            time.sleep(max(1.0, delay) * random.uniform(0.8, 1.2))
            if ahead / max(rate, 0.001) < 30 or ahead < 20:
                r = self.client.get("/status", headers=JSON)
                j: dict[str, Any] = r.json() if r.ok else {}
                if j.get("state") in ("ready", "admitted"):
                    return self._page()
                ahead = float(j.get("ahead", ahead))
                delay = float(j.get("retry_after_s") or 10)
            else:
                r = self.client.get("/queue/state", headers=JSON, name="/queue/state")
                j = r.json() if r.ok else {}
                if not isinstance(j.get("frontier"), int):
                    delay = 10.0
                    continue
                if j["epoch"] != epoch or position <= j["frontier"]:
                    return self._page()
                if j["rate"] > 0:  # a paused line reports 0: keep the last real rate
                    rate = float(j["rate"])
                ahead = max(0.0, position - j["frontier"] - 1.0)
                wait = ahead / max(rate, 0.001) / 4
                delay = 5.0 if j["paused"] else min(60.0, max(2.0, wait))

    @task
    def get_my_result(self) -> None:
        page = self._page()
        while 'name="roll"' not in page:
            page = self._wait(page)
        time.sleep(random.uniform(0, 1))
        form = {"roll": self.sheet.roll, "dob": self.sheet.dob.isoformat()}
        with self.client.post("/result", data=form, headers=HTML, catch_response=True) as r:
            text = html.unescape(r.text or "")
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
            elif f"<dd>{self.sheet.roll}</dd>" not in text or self.sheet.name not in text:
                r.failure("someone else's marksheet")
        raise StopUser  # a student who has the result leaves

"""What each of the door's decisions looks like: a page for a browser, JSON for an app.

Every decision a student can meet has its answer here, and none is a 500: a place
in line, a calm page that retries by itself, or JSON that says what to do next.
The pages come compiled (``waitroom.gateway.pages``), so an answer costs a few string
joins.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from waitroom.gateway.pages import Pages
from waitroom.gateway.responses import HTML, JSON, NO_STORE, CookiePolicy, Response
from waitroom.room.door import (
    Admitted,
    Decision,
    Forward,
    JoinLimited,
    LookupLimited,
    NoPlace,
    Unavailable,
    Visit,
    Waiting,
)
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE

ADMITTED_JSON = b'{"state":"admitted","retry_after_s":0,"result_url":"/api/result"}'
# Seconds before the busy page (a backend fault) tries again.
BUSY_RETRY_S = 5


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class Replies:
    def __init__(
        self,
        pages: Pages,
        cookies: CookiePolicy,
        *,
        waiting_status: int,
        ticket_ttl_s: int,
        pass_ttl_s: Callable[[], int],
    ) -> None:
        self.pages = pages
        self.cookies = cookies
        self.waiting_status = waiting_status
        self.ticket_ttl_s = ticket_ttl_s
        # The pass lifetime is an admin control: a callable giving the one in force.
        self.pass_ttl_s = pass_ttl_s

    def to(self, decision: Decision, visit: Visit, lang: str) -> Response:
        """The answer to every decision but ``Forward`` (``waitroom.gateway.lean`` forwards)."""
        as_json = visit.as_json
        if isinstance(decision, Waiting):
            return self.waiting(decision, visit, lang)
        if isinstance(decision, Admitted):
            response = Response(200, ADMITTED_JSON, JSON, [(b"cache-control", NO_STORE)])
            return self.with_pass(response, decision.issued, visit)
        if isinstance(decision, NoPlace):
            # What a GET would answer, short of the place it would take.
            status = 202 if as_json else self.waiting_status
            return Response(status, b"", JSON if as_json else HTML, [(b"cache-control", NO_STORE)])
        if isinstance(decision, LookupLimited):
            return self.lookup_limited(decision.limit, as_json, lang)
        if isinstance(decision, JoinLimited):
            return self.join_limited(decision.wait_s, as_json, lang)
        if isinstance(decision, Unavailable):
            return self.unavailable(decision.retry_s, as_json, lang)
        assert isinstance(decision, Forward), decision
        raise ValueError("a Forward is answered by the origin, not here")

    # -- a place in line -----------------------------------------------------------------

    def waiting(self, decision: Waiting, visit: Visit, lang: str) -> Response:
        as_json = visit.as_json
        now = decision.standing
        headers = [(b"retry-after", b"%d" % now.retry_after_s), (b"cache-control", NO_STORE)]
        if as_json:
            body = now.as_json()
            if decision.notice:
                body["notice"] = decision.notice
            response = Response(200 if now.ready else 202, dumps(body), JSON, headers)
        else:
            html = self.pages.waiting(decision.ticket, now, decision.notice, lang)
            status = 200 if now.ready and not now.prequeue else self.waiting_status
            response = Response(status, html, HTML, headers)
        if decision.issued is not None:
            response.headers.append(
                self.cookies.set(TICKET_COOKIE, decision.issued, self.ticket_ttl_s)
            )
            if visit.pass_token is not None:  # an expired or foreign pass
                response.headers.append(self.cookies.drop(PASS_COOKIE))
        return response

    def with_pass(self, response: Response, issued: str | None, visit: Visit) -> Response:
        """A newly traded pass goes with the answer; the spent ticket goes away (when
        the pass expires, the student joins at the back)."""
        if issued is not None:
            response.headers.append(self.cookies.set(PASS_COOKIE, issued, self.pass_ttl_s()))
            if visit.tickets:
                response.headers.append(self.cookies.drop(TICKET_COOKIE))
        return response

    # -- calm refusals -------------------------------------------------------------------

    def lookup_limited(self, limit: int, as_json: bool, lang: str) -> Response:
        """The pass has bought all its lookups: say so; the next visit joins again."""
        if as_json:
            body = dumps(
                {
                    "state": "limit_reached",
                    "error": "lookup_limit",
                    "limit": limit,
                    "message": f"This admission allowed {limit} lookups and all were "
                    "used. Join the line again (GET /) to look up more.",
                    "join_url": "/",
                }
            )
            response = Response(429, body, JSON, [(b"cache-control", NO_STORE)])
        else:
            html = self.pages.message(
                "title_lookup_limit", "lookup_limit", lang, fmt={"limit": limit}
            )
            response = Response(429, html, HTML, [(b"cache-control", NO_STORE)])
        response.headers.append(self.cookies.drop(PASS_COOKIE))
        return response

    def join_limited(self, wait_s: int, as_json: bool, lang: str) -> Response:
        """Too many new places from this client just now: a calm page that retries."""
        headers = [(b"retry-after", b"%d" % wait_s), (b"cache-control", NO_STORE)]
        if as_json:
            body = dumps(
                {
                    "state": "limited",
                    "error": "too_many_joins",
                    "retry_after_s": wait_s,
                    "message": "Too many new places in line were taken from your network "
                    f"just now. Try again in {wait_s} s; a place you already hold is kept.",
                }
            )
            return Response(429, body, JSON, headers)
        html = self.pages.message(
            "title_join_limit", "join_limit", lang, retry_s=wait_s, fmt={"seconds": wait_s}
        )
        return Response(429, html, HTML, headers)

    def unavailable(self, retry_s: int, as_json: bool, lang: str) -> Response:
        headers = [(b"retry-after", b"%d" % retry_s), (b"cache-control", NO_STORE)]
        if as_json:
            body = dumps({"state": "unavailable", "retry_after_s": retry_s})
            return Response(503, body, JSON, headers)
        html = self.pages.message("title_unavailable", "unavailable", lang, retry_s=retry_s)
        return Response(503, html, HTML, headers)

    def busy(self, as_json: bool, lang: str, resubmit: dict[str, str], action: str) -> Response:
        """The origin failed: the pass is kept, a lookup form resubmits by itself."""
        headers = [(b"retry-after", b"%d" % BUSY_RETRY_S), (b"cache-control", NO_STORE)]
        if as_json:
            body = dumps({"state": "busy", "retry_after_s": BUSY_RETRY_S})
            return Response(503, body, JSON, headers)
        if resubmit:
            html = self.pages.busy(lang, BUSY_RETRY_S, resubmit, action)
        else:
            html = self.pages.message("title_busy", "busy", lang, retry_s=BUSY_RETRY_S)
        return Response(503, html, HTML, headers)

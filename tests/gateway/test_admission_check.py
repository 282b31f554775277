"""The README's admission check for other origins: the code a board copies works.

The Python block under "Checking the admission header at the origin" is run as it
stands: its ``admitted`` against tokens the gateway signs (fresh, old, forged,
rotated, another room's), and its ``app`` as a real origin behind a real gateway.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.e2e import GatewayFactory, forge, student, wait_for_credit
from tests.support.gateway_support import BACKEND_KEYS
from tests.support.servers import serving
from waitroom.shared.admission import SALT, AdmissionSigner

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_check(monkeypatch: pytest.MonkeyPatch, keys: tuple[str, ...]) -> dict[str, Any]:
    text = README.read_text(encoding="utf-8")
    found = re.search(r"<!-- admission-check.*?-->\n```python\n(.*?)```", text, re.S)
    assert found, "the README's admission-check block is missing"
    monkeypatch.setenv("WAITROOM_BACKEND_SECRET", ",".join(keys))
    namespace: dict[str, Any] = {}
    exec(compile(found.group(1), "README.md:admission-check", "exec"), namespace)  # noqa: S102
    return namespace


def test_the_readme_check_accepts_what_the_gateway_signs_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new = "an-old-key-being-rotated-out", "the-new-key-that-signs-now"
    admitted = readme_check(monkeypatch, (new, old))["admitted"]
    assert admitted(AdmissionSigner([new]).sign("results", "pass-1"))
    assert admitted(AdmissionSigner([old]).sign("results", "pass-1"))  # during rotation
    assert not admitted(AdmissionSigner(["someone-else"]).sign("results", "pass-1"))
    assert not admitted(AdmissionSigner([new]).sign("class-x", "pass-1"))
    assert not admitted(forge((new,), SALT, ["results", "pass-1"], age_s=40))
    assert not admitted(None) and not admitted("") and not admitted("x" * 600)


async def test_the_readme_check_as_an_origin_lets_in_only_the_gateways_students(
    monkeypatch: pytest.MonkeyPatch, gateway: GatewayFactory
) -> None:
    app = readme_check(monkeypatch, BACKEND_KEYS)["app"]
    async with serving(app) as origin, gateway(rate=50.0, backend_url=origin.url) as gw:
        async with aiohttp.ClientSession() as direct, direct.get(origin.url + "/") as r:
            assert r.status == 403  # past the line: refused
        await wait_for_credit(gw.url)
        async with student() as s, s.get(gw.url + "/marks") as r:
            assert r.status == 204  # through the line: let in

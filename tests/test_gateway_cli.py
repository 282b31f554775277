"""`waitroom serve` as an operator runs it: a real process, real workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

from tests.gateway_support import BACKEND_KEYS, TEST_KEYS
from tests.servers import free_port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAITROOM_")}
    env.update(extra)
    return env


def test_serve_refuses_production_without_a_real_secret() -> None:
    for secret in (None, "change-me", "short"):
        env = _env(WAITROOM_BACKEND_SECRET=BACKEND_KEYS[0])
        if secret is not None:
            env["WAITROOM_SECRET_KEYS"] = secret
        done = subprocess.run(
            [sys.executable, "-m", "waitroom", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2
        assert "WAITROOM_SECRET_KEYS" in done.stderr and "Traceback" not in done.stderr
        if secret:
            assert secret not in done.stderr  # never echo a secret


def test_serve_names_the_bad_setting() -> None:
    env = _env(WAITROOM_MODE="test", WAITROOM_SECRET_KEYS="k", WAITROOM_BACKEND_SECRET="k")
    done = subprocess.run(
        [sys.executable, "-m", "waitroom", "serve", "--rate", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "WAITROOM_RATE=0.0" in done.stderr


def test_serve_runs_two_workers(redis_url: str, redis_sync: object) -> None:
    port = free_port()
    env = _env(
        WAITROOM_MODE="test",
        WAITROOM_SECRET_KEYS=TEST_KEYS[0],
        WAITROOM_BACKEND_SECRET=BACKEND_KEYS[0],
        WAITROOM_REDIS_URL=redis_url,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "waitroom", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        body = b""
        while time.monotonic() < deadline:
            try:
                url = f"http://127.0.0.1:{port}/queue/state"
                with urllib.request.urlopen(url, timeout=1) as answer:
                    body = answer.read()
                    break
            except OSError:
                time.sleep(0.2)
        assert b'"frontier"' in body
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert b"Traceback" not in stderr

"""`waitroom serve` as an operator runs it: a real process, real workers."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.gateway_support import BACKEND_KEYS, TEST_KEYS
from waitroom.errors import ConfigError
from waitroom.settings import Settings
from waitroom.shared.processes import free_port
from waitroom.shared.secret_settings import estimated_bits, weak_key_problem

STRONG = secrets.token_urlsafe(32)
STRONG_BACKEND = secrets.token_urlsafe(32)


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


@pytest.mark.parametrize(
    "weak",
    ["aaaaaaaaaaaaaaaa", "abcdabcdabcdabcd", "0123456789abcdef", "password12345678"],
)
def test_production_refuses_low_entropy_keys_and_says_how_to_make_one(weak: str) -> None:
    for setting, values in [
        ("WAITROOM_SECRET_KEYS", {"secret_keys": (STRONG, weak)}),
        ("WAITROOM_BACKEND_SECRET", {"backend_secret": (weak,)}),
    ]:
        with pytest.raises(ConfigError) as caught:
            Settings(**{"secret_keys": (STRONG,), "backend_secret": (STRONG_BACKEND,), **values})
        message = str(caught.value)
        assert message.startswith(setting) and "secrets.token_urlsafe(32)" in message
        assert weak not in message and STRONG not in message
    # Outside production a weak key is the tester's business.
    Settings(mode="test", secret_keys=(weak,), backend_secret=(weak,))


def test_random_keys_pass_the_entropy_check() -> None:
    for _ in range(200):
        Settings(secret_keys=(secrets.token_urlsafe(16),), backend_secret=(secrets.token_hex(16),))
    assert estimated_bits("aaaaaaaaaaaaaaaa") == 0
    for lazy in ("abcdabcdabcdabcd", "password12345678", "0123456789abcdef"):
        assert weak_key_problem(lazy) == "repeats too few different characters to be hard to guess"


def test_production_refuses_a_backend_key_that_signs_tickets_too() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings(secret_keys=(STRONG, STRONG_BACKEND), backend_secret=(STRONG_BACKEND,))
    message = str(caught.value)
    assert message.startswith("WAITROOM_BACKEND_SECRET") and "WAITROOM_SECRET_KEYS" in message
    assert "of its own" in message and STRONG_BACKEND not in message


def test_cookies_are_secure_by_default_in_production_only() -> None:
    keys = {"secret_keys": (STRONG,), "backend_secret": (STRONG_BACKEND,)}
    assert Settings(**keys).cookie_secure is True
    assert Settings(mode="demo", **keys).cookie_secure is False
    env = {"WAITROOM_SECRET_KEYS": STRONG, "WAITROOM_BACKEND_SECRET": STRONG_BACKEND}
    assert Settings.from_env(env).cookie_secure is True
    assert Settings.from_env({**env, "WAITROOM_COOKIE_SECURE": "0"}).cookie_secure is False
    assert Settings.from_env({**env, "WAITROOM_MODE": "test"}).cookie_secure is False
    # Workers read the decision back as it was made.
    assert Settings.from_env(Settings(**keys).to_env()).cookie_secure is True


def test_secrets_are_read_from_files(tmp_path: Path) -> None:
    keys, backend = tmp_path / "keys", tmp_path / "backend"
    other = secrets.token_urlsafe(32)
    keys.write_text(f"{STRONG}\n{other}\n")
    backend.write_text(STRONG_BACKEND + "\n")
    env = {
        "WAITROOM_SECRET_KEYS_FILE": str(keys),
        "WAITROOM_BACKEND_SECRET_FILE": str(backend),
    }
    settings = Settings.from_env(env)
    assert settings.secret_keys == (STRONG, other)
    assert settings.backend_secret == (STRONG_BACKEND,)
    with pytest.raises(ConfigError, match=r"WAITROOM_SECRET_KEYS_FILE=.*set one of them"):
        Settings.from_env({**env, "WAITROOM_SECRET_KEYS": STRONG})
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"WAITROOM_BACKEND_SECRET_FILE=.*cannot read"):
        Settings.from_env({**env, "WAITROOM_BACKEND_SECRET_FILE": missing})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"WAITROOM_SECRET_KEYS_FILE=.*empty"):
        Settings.from_env({**env, "WAITROOM_SECRET_KEYS_FILE": str(tmp_path / "empty")})


def test_serve_refuses_weak_keys_without_echoing_them() -> None:
    weak = "aaaaaaaaaaaaaaaaaaaa"
    env = _env(WAITROOM_SECRET_KEYS=weak, WAITROOM_BACKEND_SECRET=STRONG_BACKEND)
    done = subprocess.run(
        [sys.executable, "-m", "waitroom", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "WAITROOM_SECRET_KEYS" in done.stderr and "token_urlsafe" in done.stderr
    assert weak not in done.stderr


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


def test_serve_runs_two_workers_with_secrets_from_files(
    redis_url: str, redis_sync: object, tmp_path: Path
) -> None:
    port = free_port()
    (tmp_path / "keys").write_text(TEST_KEYS[0] + "\n")
    (tmp_path / "backend").write_text(BACKEND_KEYS[0] + "\n")
    env = _env(
        WAITROOM_MODE="test",
        WAITROOM_SECRET_KEYS_FILE=str(tmp_path / "keys"),
        WAITROOM_BACKEND_SECRET_FILE=str(tmp_path / "backend"),
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


def test_the_rate_may_be_auto_and_a_bad_rate_names_the_setting() -> None:
    keys = {"WAITROOM_SECRET_KEYS": STRONG, "WAITROOM_BACKEND_SECRET": STRONG_BACKEND}
    fixed = Settings.from_env(keys)
    assert (fixed.rate, fixed.rate_auto, fixed.max_active) == (10.0, False, 500)
    auto = Settings.from_env({**keys, "WAITROOM_RATE": " Auto "})
    # The search may reach 1000/s, and the concurrency cap does not stop it first.
    assert (auto.rate, auto.rate_auto, auto.max_active) == (1000.0, True, 60_000)
    # The most it may reach, given as the rate.
    capped = Settings.from_env({**keys, "WAITROOM_RATE_AUTO": "1", "WAITROOM_RATE": "300"})
    assert (capped.rate, capped.rate_auto) == (300.0, True)
    assert (
        Settings.from_env(
            {**keys, "WAITROOM_MAX_ACTIVE": "800", "WAITROOM_RATE": "auto"}
        ).max_active
        == 800
    )
    # Workers read the decision back as it was made.
    assert Settings.from_env(auto.to_env()) == auto
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**keys, "WAITROOM_RATE": "fast"})
    assert str(caught.value).startswith("WAITROOM_RATE='fast': ") and "or auto" in str(caught.value)
    with pytest.raises(ConfigError, match=r"^WAITROOM_RATE_AUTO='0': .*says the opposite"):
        Settings.from_env({**keys, "WAITROOM_RATE": "auto", "WAITROOM_RATE_AUTO": "0"})
    with pytest.raises(ConfigError, match=r"^WAITROOM_RATE=inf"):
        Settings.from_env({**keys, "WAITROOM_RATE": "inf"})


def test_serve_takes_rate_auto_on_the_command_line() -> None:
    env = _env(WAITROOM_MODE="test", WAITROOM_SECRET_KEYS="k", WAITROOM_BACKEND_SECRET="k")
    done = subprocess.run(
        [sys.executable, "-m", "waitroom", "serve", "--rate", "fast"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "WAITROOM_RATE='fast'" in done.stderr
    assert "Traceback" not in done.stderr

"""Helpers shared by the gateway tests: settings for a test room."""

from __future__ import annotations

from typing import Any

from waitroom.settings import Settings

TEST_KEYS = ("test-secret-key-newest-0123456789",)
BACKEND_KEYS = ("test-backend-secret-0123456789",)


def make_settings(redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "mode": "test",
        "secret_keys": TEST_KEYS,
        "backend_secret": BACKEND_KEYS,
        "redis_url": redis_url,
        "rate": 50.0,
        "max_active": 1000,
        "pacer_tick_s": 0.05,
        "pacer_lease_s": 1.0,
        "refresh_interval_s": 0.05,
        # A test's whole crowd comes from 127.0.0.1; the tests of the per-client
        # join limit (tests/gateway/test_gateway_limits.py) set their own.
        "join_limit": 0,
    }
    values.update(overrides)
    return Settings(**values)

"""Checking what an admin types, and the admin password's hash."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from tests.support.gateway_support import make_settings
from waitroom.errors import ConfigError
from waitroom.line import controls
from waitroom.shared.passwords import check_hash_format, hash_password, verify_password

NOW = datetime(2030, 3, 17, 0, 0, tzinfo=UTC).timestamp()


def test_good_settings_become_config_values() -> None:
    changes, errors = controls.parse_settings(
        {"rate": " 12.5 ", "max_active": "300", "pass_ttl_s": "900", "mode": "queue-all"}
    )
    assert errors == []
    assert changes == {
        "rate": "12.5",
        "max_active": "300",
        "pass_ttl_s": "900",
        "mode": "queue-all",
    }


def test_numbers_are_kept_as_an_admin_would_write_them() -> None:
    changes, errors = controls.parse_settings(
        {"rate": "2", "max_active": "300.0", "pass_ttl_s": "9e2"}
    )
    assert errors == []
    assert changes == {"rate": "2", "max_active": "300", "pass_ttl_s": "900"}
    assert [controls.number_text(x) for x in (2.0, 0.30, 12.5, 1e-3)] == [
        "2",
        "0.3",
        "12.5",
        "0.001",
    ]


def test_every_bad_value_is_reported_with_the_value() -> None:
    _, errors = controls.parse_settings(
        {"rate": "0", "max_active": "lots", "pass_ttl_s": "1e9", "mode": "x"}
    )
    by_field = {e.field: e for e in errors}
    assert set(by_field) == {"rate", "max_active", "pass_ttl_s", "mode"}
    assert "got 0" in by_field["rate"].message
    assert "'lots'" in by_field["max_active"].message
    assert "'x'" in by_field["mode"].message


def test_protected_paths_are_checked_and_kept_as_a_clean_list() -> None:
    changes, errors = controls.parse_settings({"protected_paths": " /result , /results/* ,"})
    assert errors == [] and changes == {"protected_paths": "/result,/results/*"}
    for bad, reason in [
        ("results", "must start with /"),
        ("/res*ults", "may only end a pattern"),
        ("/result?roll=1", "no spaces, query string"),
    ]:
        _, errors = controls.parse_settings({"protected_paths": f"/ok,{bad}"})
        assert [e.field for e in errors] == ["protected_paths"]
        assert reason in errors[0].message and repr(bad) in errors[0].message


def test_banner_is_one_line_of_plain_text() -> None:
    assert controls.clean_banner("  Results\n\tout \x00now\u202e ") == "Results out now"
    # Devanagari's joiners survive.
    assert controls.clean_banner("क्\u200dष") == "क्\u200dष"
    _, errors = controls.parse_settings({"banner_en": "x" * 281})
    assert errors and errors[0].field == "banner_en"


def test_release_time_is_read_in_the_browsers_zone() -> None:
    # 2030-03-17 12:00 local in India (UTC+5:30: getTimezoneOffset() is -330).
    now = datetime(2030, 3, 17, 6, 0, tzinfo=UTC).timestamp()
    changes, errors = controls.parse_release("2030-03-17T12:00", "-330", now)
    assert errors == []
    expected = datetime(2030, 3, 17, 6, 30, tzinfo=UTC).timestamp()
    assert changes == {"release_at": str(int(expected * 1000))}


@pytest.mark.parametrize(
    ("when", "offset", "message"),
    [
        ("tomorrow", "", "must be a date and time"),
        ("2030-03-16T00:00", "", "must be in the future"),
        ("2030-03-27T00:00", "", "within 7 days"),
        ("2030-03-17T12:00+05:30", "", "without a zone"),
        ("2030-03-17T12:00", "9999", "out of range"),
    ],
)
def test_bad_release_times_are_refused(when: str, offset: str, message: str) -> None:
    changes, errors = controls.parse_release(when, offset, NOW)
    assert changes == {} and message in errors[0].message


def test_password_hash_round_trip_and_format() -> None:
    encoded = hash_password("a long admin password")
    check_hash_format(encoded)
    assert verify_password("a long admin password", encoded)
    assert not verify_password("a long admin passwore", encoded)
    assert not verify_password("anything", "not-a-hash")


def test_a_bad_hash_in_the_settings_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="WAITROOM_ADMIN_PASSWORD_HASH") as caught:
        make_settings("redis://x", admin_password_hash="plaintext-password")
    assert "plaintext-password" not in str(caught.value)  # never echo a secret


def test_hash_password_command_reads_stdin_and_refuses_short_passwords() -> None:
    run = [sys.executable, "-m", "waitroom", "hash-password"]
    done = subprocess.run(run, input="a long admin password\n", capture_output=True, text=True)
    assert done.returncode == 0
    assert verify_password("a long admin password", done.stdout.strip())
    short = subprocess.run(run, input="short\n", capture_output=True, text=True)
    assert short.returncode == 2 and "at least 12 characters" in short.stderr

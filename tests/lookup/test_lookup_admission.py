from __future__ import annotations

import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from waitroom.errors import AdmissionExpired, AdmissionInvalid, AdmissionMissing
from waitroom.shared.admission import SALT, AdmissionSigner


def _signed_long_ago(key: str, seconds_ago: int) -> str:
    """A genuine token whose signature carries a timestamp in the past."""

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - seconds_ago

    return URLSafeTimedSerializer(key, salt=SALT, signer=PastSigner).dumps(["room", "p"])


def test_round_trip() -> None:
    signer = AdmissionSigner(["k"])
    claim = signer.verify(signer.sign("cbse-xii", "pass-42"))
    assert (claim.room, claim.pass_id) == ("cbse-xii", "pass-42")
    assert abs(claim.issued_at - time.time()) < 2


def test_rotation_newest_signs_all_verify() -> None:
    old_only = AdmissionSigner(["old"])
    rotated = AdmissionSigner(["new", "old"])
    new_only = AdmissionSigner(["new"])
    token_old = old_only.sign("r", "p")
    token_rotated = rotated.sign("r", "p")
    assert rotated.verify(token_old).pass_id == "p"  # still accepted during rotation
    assert new_only.verify(token_rotated).pass_id == "p"  # the newest key signed it
    with pytest.raises(AdmissionInvalid):
        old_only.verify(token_rotated)
    with pytest.raises(AdmissionInvalid):
        new_only.verify(token_old)  # once the old key is dropped


def test_expired_is_told_apart_from_bad_signature() -> None:
    signer = AdmissionSigner(["k"], max_age_s=30)
    with pytest.raises(AdmissionExpired) as info:
        signer.verify(_signed_long_ago("k", 120))
    assert 119 <= info.value.age_s <= 122
    assert "limit 30 s" in str(info.value)
    assert signer.verify(_signed_long_ago("k", 10)).room == "room"
    with pytest.raises(AdmissionInvalid):
        signer.verify(_signed_long_ago("other-key", 10))


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "x" * 600, "W10.abc.def"])
def test_malformed_tokens_are_invalid(token: str) -> None:
    with pytest.raises(AdmissionInvalid):
        AdmissionSigner(["k"]).verify(token)


def test_missing_and_wrong_shape() -> None:
    signer = AdmissionSigner(["k"])
    with pytest.raises(AdmissionMissing):
        signer.verify(None)
    with pytest.raises(AdmissionMissing):
        signer.verify("")
    wrong = URLSafeTimedSerializer("k", salt=SALT).dumps({"room": "r"})
    with pytest.raises(AdmissionInvalid, match="wrong shape"):
        signer.verify(wrong)
    other_salt = URLSafeTimedSerializer("k", salt="something.else").dumps(["r", "p"])
    with pytest.raises(AdmissionInvalid):
        signer.verify(other_salt)


def test_cached_token_still_expires() -> None:
    signer = AdmissionSigner(["k"], max_age_s=30)
    token = _signed_long_ago("k", 29)
    assert signer.verify(token).room == "room"  # now cached
    time.sleep(1.2)
    with pytest.raises(AdmissionExpired):
        signer.verify(token)


def test_keys_are_required_and_never_shown() -> None:
    with pytest.raises(ValueError, match="at least one"):
        AdmissionSigner(["", ""])
    assert "s3cret" not in repr(AdmissionSigner(["s3cret"]))


def test_tokens_are_plain_itsdangerous_tokens() -> None:
    """A gateway using URLSafeTimedSerializer directly interoperates both ways."""
    ours = AdmissionSigner(["new", "old"]).sign("room", "p")
    assert URLSafeTimedSerializer("new", salt=SALT).loads(ours) == ["room", "p"]
    theirs = URLSafeTimedSerializer(["old", "new"], salt=SALT).dumps(["room", "q"])
    assert AdmissionSigner(["new"]).verify(theirs).pass_id == "q"


def test_a_gateway_clock_a_little_ahead_is_tolerated_far_ahead_is_not() -> None:
    key = "k" * 20
    verifier = AdmissionSigner([key])
    assert verifier.verify(_signed_long_ago(key, -5)).room == "room"
    with pytest.raises(AdmissionInvalid, match="future"):
        verifier.verify(_signed_long_ago(key, -120))


def test_reusable_token_is_re_signed_within_its_life() -> None:
    signer = AdmissionSigner(["k" * 20], max_age_s=1)
    first = signer.reusable("room", "gw-1")
    assert signer.reusable("room", "gw-1") == first
    assert signer.reusable("room", "gw-2") != first
    time.sleep(1.1)  # past a sixth of the life: a fresh signature
    again = signer.reusable("room", "gw-1")
    assert again != first
    assert signer.verify(again).pass_id == "gw-1"

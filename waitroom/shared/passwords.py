"""Admin password hashes: scrypt with a random salt, checked in constant time.

The password itself is never configured, only its hash, which ``waitroom
hash-password`` prints: ``scrypt$N$r$p$salt$hash`` (URL-safe base64).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

# scrypt at n=2**15 costs about 50 ms and 32 MiB here: slow for a guesser, fine
# for an admin who logs in a few times a day.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("the admin password must not be empty")
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        ["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)]
    )


def check_hash_format(encoded: str) -> None:
    """Raise ValueError naming what is wrong with a configured hash."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("expected scrypt$N$r$p$salt$hash, as `waitroom hash-password` prints")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        base64.urlsafe_b64decode(parts[4] + "==")
        base64.urlsafe_b64decode(parts[5] + "==")
    except ValueError as exc:
        raise ValueError(f"unreadable hash parameters: {exc}") from exc
    if n < 2**14 or n & (n - 1) or r < 1 or p < 1:
        raise ValueError("scrypt parameters too weak or invalid (N a power of two >= 16384)")


def verify_password(password: str, encoded: str) -> bool:
    try:
        _, n, r, p, salt, expected = encoded.split("$")
        digest = _scrypt(password, base64.urlsafe_b64decode(salt + "=="), int(n), int(r), int(p))
        return hmac.compare_digest(digest, base64.urlsafe_b64decode(expected + "=="))
    except ValueError:
        return False


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

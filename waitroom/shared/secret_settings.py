"""The settings both servers read alike: the ``WAITROOM_`` prefix, the modes, and
secret keys (from the environment or a ``_FILE``, refused in production when weak).

The gateway's ``waitroom.settings`` and the lookup backend's ``waitroom lookup``
command (``waitroom.lookup.cli``) both read their keys through these, so a key is
judged by the same rules wherever it is set.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from waitroom.errors import ConfigError

ENV_PREFIX = "WAITROOM_"
MODES = ("production", "demo", "test")
# Known-bad secrets: the demo's and the documentation's examples.
DEFAULT_SECRETS = frozenset({"", "change-me", "changeme", "secret", "waitroom-demo-secret"})
# A secret may come from WAITROOM_<NAME> or from a file named by WAITROOM_<NAME>_FILE
# (a mounted secret, readable only by the service): never from a command line,
# which every user of the machine sees in `ps`.
FILE_SUFFIX = "_FILE"
# Production keys: at least this long, and at least this many bits by the count of
# their characters (length x Shannon entropy of the character frequencies). The
# estimate only catches the lazy: "aaaaaaaaaaaaaaaa" scores 0, "abcdabcdabcdabcd"
# 32, "password12345678" 62, "0123456789abcdef" 64, while secrets.token_urlsafe(16)
# scored 71.8 at the lowest of 300,000 draws (a CI run once met one under 72, the
# old bar, and refused a random key) and token_urlsafe(32) 180 or more.
MIN_KEY_LENGTH = 16
MIN_KEY_BITS = 66
KEY_RECIPE = "python -c 'import secrets;print(secrets.token_urlsafe(32))'"


def parse_keys(value: str) -> tuple[str, ...]:
    # Commas, or one key a line in a file.
    return tuple(part.strip() for part in re.split(r"[,\n]", value) if part.strip())


def estimated_bits(key: str) -> float:
    """A key's length times the Shannon entropy of its character frequencies."""
    counts = Counter(key)
    n = len(key)
    return -sum(c * math.log2(c / n) for c in counts.values())


def weak_key_problem(key: str) -> str:
    """Why ``key`` is too weak for production ("" if it is not); never the key."""
    if key in DEFAULT_SECRETS:
        return "is a known example value"
    if len(key) < MIN_KEY_LENGTH:
        return f"has fewer than {MIN_KEY_LENGTH} characters"
    if estimated_bits(key) < MIN_KEY_BITS:
        return "repeats too few different characters to be hard to guess"
    return ""


def check_keys(setting: str, keys: Sequence[str], hint: str) -> None:
    """Refuse production keys that are missing or weak, naming which one and why."""
    if not keys:
        raise ConfigError(setting, "", f"production needs at least one key; {hint}")
    for i, key in enumerate(keys, start=1):
        problem = weak_key_problem(key)
        if problem:
            which = f"key {i} of {len(keys)}" if len(keys) > 1 else "the key"
            raise ConfigError(
                setting,
                "<hidden>",
                f"{which} {problem}. Production needs random keys of at least "
                f"{MIN_KEY_LENGTH} characters; make one with: {KEY_RECIPE}",
            )


def check_not_shared(backend_keys: Sequence[str], gateway_keys: Sequence[str]) -> None:
    """The backend's keys must not sign tickets: a leak there would forge places."""
    if set(backend_keys) & set(gateway_keys):
        raise ConfigError(
            ENV_PREFIX + "BACKEND_SECRET",
            "<hidden>",
            "a key is also in WAITROOM_SECRET_KEYS: the lookup backend holds this key, "
            "so anyone who reads it there could sign tickets and passes for the gateway. "
            f"Give the backend a key of its own (make one with: {KEY_RECIPE}) and set it "
            "on both the gateway and the backend",
        )


def read_secret(environ: Mapping[str, str], name: str) -> str | None:
    """The value of secret setting ``name`` from the environment or its ``_FILE``."""
    path = environ.get(name + FILE_SUFFIX)
    if path is None:
        return environ.get(name)
    if environ.get(name):
        raise ConfigError(
            name + FILE_SUFFIX,
            path,
            f"{name} is set too: set one of them (the file keeps the secret out of the "
            "environment of every process this one starts)",
        )
    return read_secret_file(name + FILE_SUFFIX, path)


def read_secret_file(setting: str, path: str) -> str:
    """A secret file's text, stripped; errors name ``setting`` and the path."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            setting,
            path,
            f"cannot read the secret file ({reason}); give the path of a file that this "
            "service's user can read and nobody else can",
        ) from None
    if not text:
        raise ConfigError(setting, path, f"the secret file is empty; put a key in it: {KEY_RECIPE}")
    return text

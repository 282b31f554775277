"""The languages the students' pages speak, and each one's name in itself.

Here, below the line, because the line keeps an admin's banner per language
(``waitroom.line.state``), and the gateway's words (``waitroom.gateway.i18n``) and
the lookup's (``waitroom.lookup.words``) need the list and the one way to read
Accept-Language; the first language is the default.
"""

from __future__ import annotations

LANGUAGES = ("en", "hi")
LANGUAGE_NAMES = {"en": "English", "hi": "हिन्दी"}
DEFAULT_LANGUAGE = LANGUAGES[0]


def from_accept_language(accept: str | None) -> str | None:
    """The first language of an Accept-Language header that we speak (its order, not
    its q-values), else None: the gateway and the lookup read it alike, so both pick
    the same language for the same request."""
    if accept:
        for part in accept.split(","):
            tag = part.split(";")[0].strip().lower().split("-")[0]
            if tag in LANGUAGES:
                return tag
    return None

"""The languages the students' pages speak, and each one's name in itself.

Here, below the line, because the line keeps an admin's banner per language
(``waitroom.line.state``) as well as the gateway's words (``waitroom.gateway.i18n``)
need the list; ``waitroom.lookup.words`` still keeps a copy of its own.
"""

from __future__ import annotations

LANGUAGES = ("en", "hi")
LANGUAGE_NAMES = {"en": "English", "hi": "हिन्दी"}

"""Static files with content-hashed names, held in memory.

``progress.css`` is served as ``progress.<hash>.css`` with a year of caching: a new
release changes the hash, so browsers and CDNs never mix old and new assets.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from waitroom.errors import ConfigError
from waitroom.shared.compression import compressible, gzip

IMMUTABLE = b"public, max-age=31536000, immutable"


@dataclass(frozen=True)
class Asset:
    body: bytes
    content_type: bytes
    etag: bytes
    # The body gzipped once at start, when that is worth it (None otherwise).
    gzipped: bytes | None = None


def default_static_dir() -> Path:
    package = Path(__file__).resolve().parent.parent  # waitroom/
    packaged = package / "static"  # wheel installs
    if packaged.is_dir():
        return packaged
    return package.parent / "static"  # source checkout


class Assets:
    def __init__(self, directory: str | Path | None = None) -> None:
        root = Path(directory) if directory else default_static_dir()
        if not root.is_dir():
            raise ConfigError("WAITROOM_STATIC_DIR", str(root), "not a directory")
        self.urls: dict[str, str] = {}
        self.files: dict[str, Asset] = {}
        for path in sorted(root.iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            body = path.read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:10]
            hashed = f"{path.stem}.{digest}{path.suffix}"
            ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if ctype.startswith("text/") or ctype.endswith("javascript"):
                ctype += "; charset=utf-8"
            self.urls[path.name] = f"/static/{hashed}"
            gzipped = gzip(body) if compressible(ctype.encode(), len(body)) else None
            self.files[hashed] = Asset(body, ctype.encode(), f'"{digest}"'.encode(), gzipped)

    def url(self, name: str) -> str:
        return self.urls[name]

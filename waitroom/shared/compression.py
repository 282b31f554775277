"""What is worth gzipping, and gzip at the level the crowd's hot path can afford.

Both servers use it: the gateway's answers (``waitroom.gateway.responses``) and the
hashed static assets that the gateway and the lookup backend serve
(``waitroom.shared.assets``), compressed once at start.
"""

from __future__ import annotations

import zlib

# Below about one TCP segment compression saves no round trip and costs CPU.
COMPRESS_MIN_BYTES = 1024
# Level 1: a waiting page shrinks to about half in ~15 µs; higher levels
# gain a few per cent more for several times the CPU, on the crowd's hot path.
_GZIP_LEVEL = 1
_COMPRESSIBLE = (b"text/", b"application/json", b"application/javascript", b"image/svg")


def gzip(body: bytes) -> bytes:
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip wrapper
    return compressor.compress(body) + compressor.flush()


def compressible(content_type: bytes | None, size: int) -> bool:
    return (
        size >= COMPRESS_MIN_BYTES
        and content_type is not None
        and content_type.startswith(_COMPRESSIBLE)
    )

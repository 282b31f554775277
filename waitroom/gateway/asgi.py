"""The gateway as a plain ASGI callable: ``waitroom.gateway.asgi:app``.

Any ASGI server can run it (``hypercorn waitroom.gateway.asgi:app``, ``granian --interface
asgi waitroom.gateway.asgi:app``, ``uvicorn waitroom.gateway.asgi:app``); settings come from
``WAITROOM_*`` environment variables. The app is built on the first ASGI event
(the lifespan startup) so that importing this module never needs configuration.
"""

from __future__ import annotations

from quart import Quart

from waitroom.gateway.app import create_app
from waitroom.settings import Settings
from waitroom.shared.rawasgi import Receive, Scope, Send


class LazyGateway:
    def __init__(self) -> None:
        self._app: Quart | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = create_app(Settings.from_env())
        await self._app(scope, receive, send)  # type: ignore[arg-type]


app = LazyGateway()

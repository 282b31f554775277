"""Everything one gateway worker holds open, built once per app by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from waitroom.gateway.admin.auth import AdminAuth
from waitroom.gateway.forward import Forwarder
from waitroom.gateway.pages import Pages
from waitroom.line.state import Queue
from waitroom.line.store import Client, connect, topology_of
from waitroom.room.abuse import Limits
from waitroom.room.door import Door
from waitroom.room.governor import Governor
from waitroom.room.pacer import Pacer
from waitroom.room.snapshot import RoomView
from waitroom.room.telemetry import BackendStats, Sampler, batch_counter
from waitroom.room.tickets import TicketSigner
from waitroom.settings import Settings
from waitroom.shared.assets import Assets
from waitroom.shared.paths import parse_rule


@dataclass
class Services:
    settings: Settings
    redis: Client
    queue: Queue
    view: RoomView
    pacer: Pacer
    signer: TicketSigner
    assets: Assets
    forwarder: Forwarder
    stats: BackendStats
    auth: AdminAuth
    pages: Pages
    limits: Limits
    door: Door

    @classmethod
    def build(cls, settings: Settings) -> Services:
        client = connect(topology_of(settings))
        queue = Queue(client, settings.line())
        view = RoomView(queue, settings)
        stats = BackendStats()
        assets = Assets(settings.static_dir or None)
        signer = TicketSigner(settings, pass_ttl=view.pass_ttl_s)
        limits = Limits(client, settings, view, on_batch=batch_counter(stats, "count"))
        if queue.replicas is not None:
            queue.replicas.on_unreplicated = lambda: stats.count("redis_unreplicated")
        return cls(
            settings=settings,
            redis=client,
            queue=queue,
            view=view,
            pacer=Pacer(
                queue, view, settings, Sampler(client, queue.keys), Governor(queue, settings)
            ),
            signer=signer,
            assets=assets,
            forwarder=Forwarder(settings, stats),
            stats=stats,
            auth=AdminAuth(client, queue.keys, settings.secret_keys, settings.admin_session_ttl_s),
            pages=Pages(assets, view, settings.time_zone),
            limits=limits,
            door=Door(
                view,
                signer,
                queue,
                limits,
                stats,
                join_limit=settings.join_limit,
                lookups=parse_rule(settings.lookup_paths, "WAITROOM_LOOKUP_PATHS"),
            ),
        )

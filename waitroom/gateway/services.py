"""What one gateway worker holds open, and the one place ``Settings`` is taken apart.

``Services.build`` makes a worker's parts once per app (``create_app``); each part
gets only the settings it uses, from the functions here: a small frozen dataclass
(``ViewSettings``, ``SignerSettings``, ``BackendSettings``, ``AdminSettings``) or
keyword arguments; the line's own (``LineSettings``) comes from ``Settings.line()``,
since the devtools and stress scripts open a line without a gateway. Nothing below
this module sees the whole ``Settings``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from waitroom.gateway.admin.auth import AdminAuth
from waitroom.gateway.admin.blueprint import AdminSettings
from waitroom.gateway.forward import BackendSettings, Forwarder
from waitroom.gateway.pages import Pages
from waitroom.line import controls
from waitroom.line.keys import RoomKeys
from waitroom.line.state import Queue
from waitroom.line.store import Client, connect, topology_of
from waitroom.room.abuse import Limits, parse_networks
from waitroom.room.door import Door
from waitroom.room.governor import Governor
from waitroom.room.pacer import Pacer
from waitroom.room.snapshot import RoomView, ViewSettings
from waitroom.room.telemetry import BackendStats, Sampler, batch_counter
from waitroom.room.tickets import SignerSettings, TicketSigner
from waitroom.settings import Settings
from waitroom.shared.assets import Assets
from waitroom.shared.paths import parse_rule

# -- each part's settings ----------------------------------------------------------


def view_settings(s: Settings) -> ViewSettings:
    return ViewSettings(
        room=s.room,
        refresh_interval_s=s.refresh_interval_s,
        pacer_tick_s=s.pacer_tick_s,
        active_window_s=s.active_window_s,
        rate=s.rate,
        max_active=s.max_active,
        pass_ttl_s=s.pass_ttl_s,
    )


def signer_settings(s: Settings) -> SignerSettings:
    return SignerSettings(s.room, s.secret_keys, s.ticket_ttl_s, s.pass_ttl_s)


def backend_settings(s: Settings) -> BackendSettings:
    return BackendSettings(
        url=s.backend_url,
        secret=s.backend_secret,
        room=s.room,
        pool_size=s.backend_pool_size,
        connect_timeout_s=s.backend_connect_timeout_s,
        read_timeout_s=s.backend_read_timeout_s,
    )


def admin_settings(s: Settings) -> AdminSettings:
    return AdminSettings(
        room=s.room,
        password_hash=s.admin_password_hash,
        session_ttl_s=s.admin_session_ttl_s,
        trusted=parse_networks(s.trusted_proxies),
        defaults={
            "rate": controls.number_text(s.rate),
            "max_active": str(s.max_active),
            "pass_ttl_s": str(s.pass_ttl_s),
            "mode": "queue",
            "paused": "0",
            "protected_paths": s.protected_paths,
            "rate_auto": "1" if s.rate_auto else "0",
        },
    )


# -- parts that take a few values ----------------------------------------------------


def make_view(queue: Queue, s: Settings) -> RoomView:
    return RoomView(queue, view_settings(s))


def make_signer(s: Settings, pass_ttl: Callable[[], int] | None = None) -> TicketSigner:
    return TicketSigner(signer_settings(s), pass_ttl)


def make_governor(queue: Queue, s: Settings) -> Governor:
    return Governor(
        queue,
        p95_target_ms=s.backend_p95_target_ms,
        error_target=s.backend_error_target,
        noshow_compensation=s.noshow_compensation,
    )


def make_pacer(
    queue: Queue,
    view: RoomView,
    s: Settings,
    sampler: Sampler | None = None,
    governor: Governor | None = None,
) -> Pacer:
    return Pacer(
        queue,
        view,
        tick_s=s.pacer_tick_s,
        lease_s=s.pacer_lease_s,
        sampler=sampler,
        governor=governor,
    )


def make_limits(
    client: Client, view: RoomView, s: Settings, on_batch: Callable[[int], None] | None = None
) -> Limits:
    return Limits(
        client,
        RoomKeys(s.room),
        view,
        max_lookups=s.pass_max_lookups,
        trusted_proxies=s.trusted_proxies,
        on_batch=on_batch,
    )


# -- the worker ----------------------------------------------------------------------


@dataclass
class Services:
    """Everything one gateway worker holds open; ``create_app`` hands each of the
    admin, the metrics and the lean layer the parts it uses."""

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
        view = make_view(queue, settings)
        stats = BackendStats()
        assets = Assets(settings.static_dir or None)
        signer = make_signer(settings, pass_ttl=view.pass_ttl_s)
        limits = make_limits(client, view, settings, on_batch=batch_counter(stats, "count"))
        if queue.replicas is not None:
            queue.replicas.on_unreplicated = lambda: stats.count("redis_unreplicated")
        sampler = Sampler(client, queue.keys)
        return cls(
            redis=client,
            queue=queue,
            view=view,
            pacer=make_pacer(queue, view, settings, sampler, make_governor(queue, settings)),
            signer=signer,
            assets=assets,
            forwarder=Forwarder(backend_settings(settings), stats),
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

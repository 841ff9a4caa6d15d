"""Prometheus metrics of one accel process, served at ``/metrics`` by every component.

Hellos, discoveries, what each sync changed, agents by state, alarms raised, and
the latency of every HTTP request served. Each process has its own registry, so a
test (or an embedding) never mixes two components' numbers.

The api adds the fleet as the database holds it (``accel_fleet_*``), read once per
scrape: devices by kind and use, active alarms, each agent's state, live conductors,
and how far behind the syncs are. Every api replica serves the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REGISTRY = CollectorRegistry()

HELLOS = Counter(
    "accel_hellos",
    "Hellos received, by whether the sender was new.",
    ["component", "outcome"],
    registry=REGISTRY,
)
DISCOVERIES = Counter(
    "accel_discoveries", "Discoveries run, by outcome.", ["component", "outcome"], registry=REGISTRY
)
INVENTORY_CHANGES = Counter(
    "accel_inventory_changes", "Devices a sync wrote, by change.", ["change"], registry=REGISTRY
)
AGENTS = Gauge(
    "accel_agents", "Agents known to the database, by state.", ["state"], registry=REGISTRY
)
ALARMS_RAISED = Counter(
    "accel_alarms_raised", "Alarms raised, by kind.", ["kind"], registry=REGISTRY
)
SYNC_LEASES = Counter(
    "accel_sync_leases",
    "Sync leases a conductor claimed, took over from a conductor that stopped renewing "
    "them, or lost to another while its sync ran.",
    ["outcome"],
    registry=REGISTRY,
)
NOVA_EVENTS = Counter(
    "accel_nova_events",
    "Posts of accelerator-request-bound events to Nova, by outcome: sent, rejected "
    "(Nova refused them: given up), retry (failed, tried again later), gave_up.",
    ["outcome"],
    registry=REGISTRY,
)
WRITE_BATCH_ITEMS = Histogram(
    "accel_write_batch_items",
    "Items written in one transaction, by writer (the conductor's hellos and "
    "inventory, the api's writes on SQLite).",
    ["writer"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
# Dashboards use these two names as they are.
PLACEMENT_CALLS = Counter(
    "accel_placement_calls",
    "Calls to OpenStack Placement, by HTTP method and outcome (ok, conflict, "
    "not_found, refused, error, unreachable).",
    ["method", "outcome"],
    registry=REGISTRY,
)
PLACEMENT_PENDING = Gauge(
    "accel_placement_pending_nodes",
    "Nodes whose Placement report this conductor has yet to make (changed, or failed).",
    registry=REGISTRY,
)
NOVA_EVENT_OUTCOMES = ("sent", "rejected", "retry", "gave_up")
PLACEMENT_CALL_OUTCOMES = ("ok", "conflict", "not_found", "refused", "error", "unreachable")
PLACEMENT_METHODS = ("GET", "PUT", "POST", "DELETE")


def show_openstack_calls() -> None:
    """Every series of the OpenStack counters at 0, on a conductor: alert rules and
    dashboards see them (and their rate) before the first call, not only after it."""
    for outcome in NOVA_EVENT_OUTCOMES:
        NOVA_EVENTS.labels(outcome)
    for method in PLACEMENT_METHODS:
        for outcome in PLACEMENT_CALL_OUTCOMES:
            PLACEMENT_CALLS.labels(method, outcome)


REQUEST_SECONDS = Histogram(
    "accel_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["component", "method", "status"],
    registry=REGISTRY,
)


class DeviceUse(StrEnum):
    """What a device is to the fleet's roll-up; the first that applies, in this order."""

    VANISHED = "vanished"  # gone from its node's reports, kept in history
    IN_USE = "in_use"  # an attach handle of it is bound to an instance
    SETUP_REQUIRED = "setup_required"  # setup or a reboot pending: not offered
    MAINTAINING = "maintaining"  # an admin keeps it out of new binds
    READY = "ready"


@dataclass(frozen=True)
class FleetSnapshot:
    """The fleet as one read of the database found it."""

    devices: Mapping[tuple[str, DeviceUse], int]  # (kind, use): devices
    active_alarms: Mapping[str, int]  # alarm kind: active alarms
    agents_up: Mapping[str, bool]  # node: whether its agent is UP
    conductors_alive: int
    # UP agents whose sync is due, and how long the longest-waiting one has waited.
    syncs_due: int
    sync_lag_seconds: float
    # UP agents whose last sync failed.
    syncs_failing: int
    # Sync leases past their expiry that no conductor took over (their holder died).
    leases_orphaned: int


class FleetCollector:
    """Serves one FleetSnapshot, or, where the database could not be read, only that."""

    def __init__(self, snapshot: FleetSnapshot | None, alarm_kinds: tuple[str, ...]) -> None:
        self.snapshot = snapshot
        # Every kind is served, 0 when none is active: an alert's series never vanishes.
        self.alarm_kinds = alarm_kinds

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "accel_fleet_read_ok",
            "1 if this scrape read the fleet from the database, 0 if the database was away.",
            value=0 if self.snapshot is None else 1,
        )
        fleet = self.snapshot
        if fleet is None:
            return
        devices = GaugeMetricFamily(
            "accel_fleet_devices",
            "Devices in the database, by kind and use.",
            labels=["kind", "use"],
        )
        for (kind, use), count in sorted(fleet.devices.items()):
            devices.add_metric([kind, use], count)
        yield devices
        alarms = GaugeMetricFamily(
            "accel_fleet_alarms_active", "Active alarms, by kind.", labels=["kind"]
        )
        for kind in sorted({*self.alarm_kinds, *fleet.active_alarms}):
            alarms.add_metric([kind], fleet.active_alarms.get(kind, 0))
        yield alarms
        agents = GaugeMetricFamily(
            "accel_fleet_agent_up", "1 if the node's agent is UP, 0 if DOWN.", labels=["node"]
        )
        for node, up in sorted(fleet.agents_up.items()):
            agents.add_metric([node], 1 if up else 0)
        yield agents
        for name, text, value in (
            (
                "accel_fleet_conductors_alive",
                "Conductors whose presence is fresh.",
                fleet.conductors_alive,
            ),
            ("accel_fleet_syncs_due", "UP agents whose sync is due now.", fleet.syncs_due),
            (
                "accel_fleet_sync_lag_seconds",
                "How long the UP agent waiting longest for its due sync has waited.",
                fleet.sync_lag_seconds,
            ),
            ("accel_fleet_syncs_failing", "UP agents whose last sync failed.", fleet.syncs_failing),
            (
                "accel_fleet_sync_leases_orphaned",
                "Sync leases past their expiry that no conductor took over.",
                fleet.leases_orphaned,
            ),
        ):
            yield GaugeMetricFamily(name, text, value=value)


def exposition(*collectors: Collector) -> Response:
    """This process's metrics, then those of ``collectors``, made for this scrape."""
    body = generate_latest(REGISTRY)
    if collectors:
        scrape = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            scrape.register(collector)
        body += generate_latest(scrape)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def metrics(request: Request) -> Response:
    return exposition()


# Methods named as such in the request metric; any other is counted as OTHER, so a
# client inventing methods cannot grow the label set without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestTimer:
    """Times every HTTP request the wrapped app answers."""

    def __init__(self, app: ASGIApp, component: str) -> None:
        self.app = app
        self.component = component
        # The histogram's child per (method, status), looked up once: labels() showed
        # in a cached api read's profile.
        self._observers: dict[tuple[str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, note_status)
        finally:
            self._observer(scope["method"], status).observe(time.perf_counter() - started)

    def _observer(self, method: str, status: int) -> Histogram:
        method = method if method in METHODS else "OTHER"
        observer = self._observers.get((method, status))
        if observer is None:
            observer = REQUEST_SECONDS.labels(self.component, method, str(status))
            self._observers[(method, status)] = observer
        return observer

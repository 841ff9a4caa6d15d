"""Prometheus metrics of one accel process, served at ``/metrics`` by every component.

Hellos, discoveries, what each sync changed, agents by state, alarms raised, and
the latency of every HTTP request served. Each process has its own registry, so a
test (or an embedding) never mixes two components' numbers.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
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
REQUEST_SECONDS = Histogram(
    "accel_http_request_duration_seconds",
    "Time to answer an HTTP request.",
    ["component", "method", "status"],
    registry=REGISTRY,
)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


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

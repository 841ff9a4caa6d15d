"""``GET /v2/placement/status``: per node, what accel reported to Placement, whether a
report is pending, and the last error (admin only). Read from the database, which
the conductors' Placement loops write (``accel.conductor.placement.state``)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.api.devices import timestamp
from accel.api.policy import authorize
from accel.api.queries import reader
from accel.db.models import PlacementNode
from accel.web.queries import only_params


def node_body(row: PlacementNode) -> dict[str, Any]:
    providers: dict[str, dict[str, Any]] = json.loads(row.providers_json or "{}")
    return {
        "node": row.node,
        "root_uuid": row.root_uuid,
        "providers": len(providers),
        "held_by_allocations": sorted(u for u, left in providers.items() if left.get("u")),
        "pending": row.pending,
        "reported_at": timestamp(row.reported_at),
        "checked_at": timestamp(row.checked_at),
        "next_try_at": timestamp(row.next_try_at) if row.pending else None,
        "failures": row.failures,
        "last_error": row.last_error,
    }


async def placement_status(request: Request) -> Response:
    authorize(request, "accel:placement:get")
    params = only_params(request, ("node",))

    def query(session: Session) -> list[PlacementNode]:
        statement = select(PlacementNode).order_by(PlacementNode.node)
        if "node" in params:
            statement = statement.where(PlacementNode.node == params["node"])
        return list(session.scalars(statement))

    rows = await reader(request).run(query)
    return JSONResponse({"nodes": [node_body(row) for row in rows]})


routes = [Route("/v2/placement/status", placement_status, methods=["GET"])]

"""accel's own endpoints beside Cyborg's: agents, conductors, alarms, and hardware with
its history."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from accel.api.devices import health_body, timestamp
from accel.api.policy import authorize
from accel.api.queries import reader
from accel.db.columns import utcnow
from accel.db.conductor_liveness import conductor_alive
from accel.db.models import Agent, Alarm, Conductor, Device
from accel.errors import InvalidInput
from accel.states import AgentState, AlarmState
from accel.web.queries import only_params


def _choice(params: dict[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = params.get(name, default)
    if value not in choices:
        raise InvalidInput(f"query parameter {name} must be one of {', '.join(choices)}")
    return value


def agent_rows(session: Session) -> list[Agent]:
    """Every agent, by name (``/v2/agents`` and the fleet page)."""
    return list(session.scalars(select(Agent).order_by(Agent.name)))


async def list_agents(request: Request) -> Response:
    authorize(request, "accel:fleet:get")
    only_params(request, ())

    agents = await reader(request).run(agent_rows)
    return JSONResponse(
        {
            "agents": [
                {
                    "name": agent.name,
                    "endpoint": agent.endpoint,
                    "state": agent.state,
                    "last_seen": timestamp(agent.last_seen),
                    "last_synced_at": timestamp(agent.last_synced_at),
                    "last_sync_error": agent.last_sync_error,
                    "internal_version": agent.internal_version,
                    "created_at": timestamp(agent.created_at),
                }
                for agent in agents
            ]
        }
    )


async def list_conductors(request: Request) -> Response:
    """Each conductor that ever reported in, whether it is alive, the agents whose syncs
    it holds right now (a lease lasts while a sync runs) and those it synced last."""
    authorize(request, "accel:fleet:get")
    only_params(request, ())

    def query(session: Session) -> list[dict[str, Any]]:
        now = utcnow()
        held: dict[str, list[str]] = {}
        synced: dict[str, list[str]] = {}
        for owner, last_by, name, until in session.execute(
            select(Agent.sync_owner, Agent.last_synced_by, Agent.name, Agent.sync_lease_until)
            .where(or_(Agent.sync_owner.is_not(None), Agent.last_synced_by.is_not(None)))
            .order_by(Agent.name)
        ):
            if owner is not None and until is not None and until >= now:
                held.setdefault(owner, []).append(name)
            if last_by is not None:
                synced.setdefault(last_by, []).append(name)
        return [
            {
                "name": conductor.name,
                "endpoint": conductor.endpoint,
                "started_at": timestamp(conductor.started_at),
                "last_seen": timestamp(conductor.last_seen),
                "alive_until": timestamp(conductor.alive_until),
                "alive": conductor_alive(conductor.alive_until, conductor.last_seen, now),
                "sync_leases": held.get(conductor.name, []),
                "synced_agents": synced.get(conductor.name, []),
            }
            for conductor in session.scalars(select(Conductor).order_by(Conductor.name))
        ]

    return JSONResponse({"conductors": await reader(request).run(query)})


def alarm_rows(session: Session, state: str, subject: str | None = None) -> list[Alarm]:
    """The alarms in ``state`` (or ``all``), oldest first, of ``subject`` if given."""
    statement = select(Alarm).order_by(Alarm.raised_at, Alarm.id)
    if state != "all":
        statement = statement.where(Alarm.state == state)
    if subject is not None:
        statement = statement.where(Alarm.subject == subject)
    return list(session.scalars(statement))


async def list_alarms(request: Request) -> Response:
    authorize(request, "accel:fleet:get")
    params = only_params(request, ("state",))
    state = _choice(params, "state", (*AlarmState, "all"), AlarmState.ACTIVE)

    alarms = await reader(request).run(lambda session: alarm_rows(session, state))
    return JSONResponse(
        {
            "alarms": [
                {
                    "uuid": alarm.uuid,
                    "kind": alarm.kind,
                    "subject": alarm.subject,
                    "state": alarm.state,
                    "raised_at": timestamp(alarm.raised_at),
                    "cleared_at": timestamp(alarm.cleared_at),
                    "message": alarm.message,
                }
                for alarm in alarms
            ]
        }
    )


def hardware_body(device: Device, agent_state: AgentState) -> dict[str, Any]:
    reported: dict[str, Any] = json.loads(device.hardware)
    return {
        **reported,
        "node": device.hostname,
        "present": device.present,
        "reachable": agent_state == AgentState.UP,
        "vanished_at": timestamp(device.vanished_at),
        "first_seen": timestamp(device.created_at),
        "updated_at": timestamp(device.updated_at),
        # The stored health: the latch and the brake's hold over the driver's reading.
        "health": health_body(device),
    }


def hardware_statement(
    columns: tuple[Any, ...],
    state: str,
    kind: str | None = None,
    node: str | None = None,
    uuid: str | None = None,
) -> Select[Any]:
    """``columns`` of hardware ``present``, ``vanished`` or ``all`` (joined with its
    agent), by node, kind and PCI address: ``/v2/hardware`` and the fleet page."""
    statement = (
        select(*columns)
        .join_from(Device, Agent, Device.agent_id == Agent.id)
        .order_by(Device.hostname, Device.type, Device.pci_address, Device.id)
    )
    if state != "all":
        statement = statement.where(Device.present.is_(state == "present"))
    if kind is not None:
        statement = statement.where(Device.type == kind.upper())
    if node is not None:
        statement = statement.where(Device.hostname == node)
    if uuid is not None:
        statement = statement.where(Device.uuid == uuid)
    return statement


def hardware_rows(
    session: Session,
    state: str,
    kind: str | None = None,
    node: str | None = None,
    uuid: str | None = None,
) -> list[tuple[Device, AgentState]]:
    """Each device chosen as ``hardware_statement`` chooses, with its agent's state."""
    statement = hardware_statement((Device, Agent.state), state, kind, node, uuid)
    return [(device, agent_state) for device, agent_state in session.execute(statement)]


async def list_hardware(request: Request) -> Response:
    """Every device any driver reported, ready or not, present or (on request) vanished."""
    authorize(request, "accel:fleet:get")
    params = only_params(request, ("state", "type", "node"))
    state = _choice(params, "state", ("present", "vanished", "all"), "present")

    rows = await reader(request).run(
        lambda session: hardware_rows(session, state, params.get("type"), params.get("node"))
    )
    return JSONResponse({"hardware": [hardware_body(d, s) for d, s in rows]})


routes = [
    Route("/v2/agents", list_agents, methods=["GET"]),
    Route("/v2/conductors", list_conductors, methods=["GET"]),
    Route("/v2/alarms", list_alarms, methods=["GET"]),
    Route("/v2/hardware", list_hardware, methods=["GET"]),
]

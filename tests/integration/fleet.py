"""Reading what the public API says about the fleet, for integration tests."""

from __future__ import annotations

from typing import Any

import httpx

from tests.processes import Service

FAST_CONDUCTOR = (
    "--heartbeat-interval",
    "0.5",
    "--resync-interval",
    "1",
    "--discovery-timeout",
    "5",
)
FAST_AGENT = ("--heartbeat-interval", "0.5", "--driver-timeout", "3")
FAST_DRIVER = ("--hello-interval", "0.5")


def get(api: Service, path: str, **params: str) -> Any:
    response = httpx.get(api.url + path, params=params, timeout=10.0)
    response.raise_for_status()
    return response.json()


def devices(api: Service, **params: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = get(api, "/v2/devices", **params)["devices"]
    return found


def hardware(api: Service, state: str = "present") -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = get(api, "/v2/hardware", state=state)["hardware"]
    return found


def agents(api: Service) -> dict[str, dict[str, Any]]:
    return {agent["name"]: agent for agent in get(api, "/v2/agents")["agents"]}


def alarms(api: Service, state: str = "active") -> list[tuple[str, str]]:
    return [(a["kind"], a["subject"]) for a in get(api, "/v2/alarms", state=state)["alarms"]]

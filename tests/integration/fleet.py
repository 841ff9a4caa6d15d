"""Reading what the public API and the components' metrics say about the fleet, for
integration tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from accel.cli.argv import Setting
from accel.states import AlarmState
from tests.processes import TOKEN, Service, wait_until

FAST_CONDUCTOR: dict[str, Setting] = {
    "heartbeat_interval": 0.5,
    "resync_interval": 1,
    "discovery_timeout": 5,
}
FAST_AGENT: dict[str, Setting] = {"heartbeat_interval": 0.5, "driver_timeout": 3}
FAST_DRIVER: dict[str, Setting] = {"hello_interval": 0.5}


# A component's /metrics asks for the internal token.
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(service: Service, headers: dict[str, str]) -> Samples:
    text = httpx.get(service.url + "/metrics", headers=headers, timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


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


def alarms(api: Service, state: str = AlarmState.ACTIVE) -> list[tuple[str, str]]:
    return [(a["kind"], a["subject"]) for a in get(api, "/v2/alarms", state=state)["alarms"]]


def wait_for_devices(
    api: Service, count: int, on_timeout: str | Callable[[], str] = ""
) -> list[dict[str, Any]]:
    """The device list, once it holds ``count`` devices."""

    def check() -> list[dict[str, Any]] | None:
        found = devices(api)
        return found if len(found) == count else None

    return wait_until(check, f"{count} devices in the API", on_timeout=on_timeout)


def bind_ops(rp_uuid: str, instance: str, hostname: str = "node1") -> list[dict[str, str]]:
    """The JSON-patch ops Nova sends to bind an accelerator request."""
    return [
        {"op": "add", "path": "/hostname", "value": hostname},
        {"op": "add", "path": "/device_rp_uuid", "value": rp_uuid},
        {"op": "add", "path": "/instance_uuid", "value": instance},
    ]

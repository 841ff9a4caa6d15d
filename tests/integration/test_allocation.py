"""Accelerator requests bound for real: the api asks a conductor, which allocates."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from accel.driver.fake_sysfs import FakeSysfs
from accel.states import AlarmKind, ArqState, DeviceStatus
from tests.integration.fleet import (
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    bind_ops,
    wait_for_devices,
)
from tests.processes import Cluster, Service, wait_until

HEADERS = {"OpenStack-API-Version": "accelerator 2.3"}


def qat_node(cluster: Cluster, database: str, tree: FakeSysfs) -> Service:
    conductor = cluster.conductor(database, **FAST_CONDUCTOR)
    api = cluster.api(database)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    cluster.driver("QAT", agent, tree.root, **FAST_DRIVER)
    wait_for_devices(api, 2, cluster.logs())
    return api


def call(api: Service, method: str, path: str, body: Any = None, **params: str) -> httpx.Response:
    return httpx.request(
        method, api.url + path, json=body, params=params, headers=HEADERS, timeout=30.0
    )


def create_profile(api: Service, name: str, group: dict[str, str]) -> None:
    response = call(api, "POST", "/v2/device_profiles", [{"name": name, "groups": [group]}])
    assert response.status_code == 201, response.text


def create_arqs(api: Service, profile: str) -> list[dict[str, Any]]:
    response = call(api, "POST", "/v2/accelerator_requests", {"device_profile_name": profile})
    assert response.status_code == 201, response.text
    arqs: list[dict[str, Any]] = response.json()["arqs"]
    return arqs


def qat_vf_deployables(api: Service) -> dict[str, dict[str, Any]]:
    found = call(api, "GET", "/v2/deployables").json()["deployables"]
    return {d["name"]: d for d in found if d["name"].startswith("node1_0000:6b")}


def arq(api: Service, arq_uuid: str) -> dict[str, Any]:
    found: dict[str, Any] = call(api, "GET", f"/v2/accelerator_requests/{arq_uuid}").json()
    return found


def test_bind_allocates_a_vf_and_unbind_and_delete_free_it(
    cluster: Cluster, database_url: str, gpu_server: FakeSysfs
) -> None:
    api = qat_node(cluster, database_url, gpu_server)
    create_profile(
        api, "qat-vf", {"resources:CUSTOM_QAT": "2", "trait:CUSTOM_QAT_INTEL": "required"}
    )
    first, second = create_arqs(api, "qat-vf")
    assert (first["state"], first["device_profile_group_id"]) == (ArqState.INITIAL, 0)
    vf = qat_vf_deployables(api)["node1_0000:6b:00.2"]
    instance = str(uuid.uuid4())

    patch = call(
        api, "PATCH", "/v2/accelerator_requests", {first["uuid"]: bind_ops(vf["rp_uuid"], instance)}
    )
    assert patch.status_code == 202, patch.text
    bound = arq(api, first["uuid"])
    assert bound["state"] == ArqState.BOUND
    assert bound["attach_handle_type"] == "PCI"
    assert bound["attach_handle_info"] == {
        "domain": "0000",
        "bus": "6b",
        "device": "00",
        "function": "2",
    }
    assert (bound["hostname"], bound["instance_uuid"]) == ("node1", instance)
    resolved = call(
        api, "GET", "/v2/accelerator_requests", instance=instance, bind_state="resolved"
    ).json()["arqs"]
    assert [a["uuid"] for a in resolved] == [first["uuid"]]

    # The VF is taken: the second request fails to bind there, saying why.
    other_instance = str(uuid.uuid4())
    call(
        api,
        "PATCH",
        "/v2/accelerator_requests",
        {second["uuid"]: bind_ops(vf["rp_uuid"], other_instance)},
    )
    failed = arq(api, second["uuid"])
    assert (
        failed["state"] == ArqState.BIND_FAILED
        and "no free accelerator" in failed["bind_failure_reason"]
    )

    unbind = [
        {"op": "remove", "path": "/hostname"},
        {"op": "remove", "path": "/device_rp_uuid"},
        {"op": "remove", "path": "/instance_uuid"},
    ]
    assert (
        call(api, "PATCH", "/v2/accelerator_requests", {first["uuid"]: unbind}).status_code == 202
    )
    assert arq(api, first["uuid"])["state"] == ArqState.UNBOUND
    assert arq(api, first["uuid"])["attach_handle_info"] == {}
    call(api, "PATCH", "/v2/accelerator_requests", {second["uuid"]: unbind})
    call(
        api,
        "PATCH",
        "/v2/accelerator_requests",
        {second["uuid"]: bind_ops(vf["rp_uuid"], other_instance)},
    )
    assert arq(api, second["uuid"])["state"] == ArqState.BOUND  # the freed VF

    assert call(api, "DELETE", "/v2/accelerator_requests", arqs=second["uuid"]).status_code == 204
    assert call(api, "GET", f"/v2/accelerator_requests/{second['uuid']}").status_code == 404
    call(api, "PATCH", "/v2/accelerator_requests", {first["uuid"]: unbind})
    call(
        api, "PATCH", "/v2/accelerator_requests", {first["uuid"]: bind_ops(vf["rp_uuid"], instance)}
    )
    assert arq(api, first["uuid"])["state"] == ArqState.BOUND  # deleting freed it again


def test_parallel_binds_never_over_allocate(
    cluster: Cluster, database_url: str, gpu_server: FakeSysfs
) -> None:
    api = qat_node(cluster, database_url, gpu_server)
    create_profile(api, "qat-many", {"resources:CUSTOM_QAT": "12"})
    requests = create_arqs(api, "qat-many")
    vfs = list(qat_vf_deployables(api).values())  # four VFs, one accelerator each
    assert len(vfs) == 4

    def bind(index: int) -> int:
        target = vfs[index % 2]  # twelve requests at two VFs
        return call(
            api,
            "PATCH",
            "/v2/accelerator_requests",
            {requests[index]["uuid"]: bind_ops(target["rp_uuid"], str(uuid.uuid4()))},
        ).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(bind, range(12)))
    assert statuses == [202] * 12
    states = [arq(api, r["uuid"]) for r in requests]
    bound = [s for s in states if s["state"] == ArqState.BOUND]
    assert len(bound) == 2
    assert len({json_key(s["attach_handle_info"]) for s in bound}) == 2
    assert sum(s["state"] == ArqState.BIND_FAILED for s in states) == 10


def json_key(info: dict[str, str]) -> str:
    return ",".join(f"{k}={info[k]}" for k in sorted(info))


def test_devices_in_maintenance_are_not_allocated(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    api = qat_node(cluster, sqlite_url, gpu_server)
    create_profile(api, "qat-one", {"resources:CUSTOM_QAT": "1"})
    [request] = create_arqs(api, "qat-one")
    vf = qat_vf_deployables(api)["node1_0000:6b:00.1"]
    device = next(
        d
        for d in call(api, "GET", "/v2/devices", type="QAT").json()["devices"]
        if d["uuid"]
        == next(
            h["uuid"]
            for h in call(api, "GET", "/v2/hardware").json()["hardware"]
            if h["pci"]["address"] == "0000:6b:00.0"
        )
    )
    assert call(api, "POST", f"/v2/devices/{device['uuid']}/disable").status_code == 200
    assert (
        call(api, "GET", f"/v2/devices/{device['uuid']}").json()["status"]
        == DeviceStatus.MAINTAINING
    )

    call(
        api,
        "PATCH",
        "/v2/accelerator_requests",
        {request["uuid"]: bind_ops(vf["rp_uuid"], str(uuid.uuid4()))},
    )
    failed = arq(api, request["uuid"])
    assert (
        failed["state"] == ArqState.BIND_FAILED and "maintenance" in failed["bind_failure_reason"]
    )

    # A request in BindFailed cannot be bound again before it is unbound.
    again = call(
        api,
        "PATCH",
        "/v2/accelerator_requests",
        {request["uuid"]: bind_ops(vf["rp_uuid"], str(uuid.uuid4()))},
    )
    assert again.status_code == 409


def test_hardware_vanishing_under_an_allocation_raises_an_alarm_naming_the_request(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    api = qat_node(cluster, sqlite_url, gpu_server)
    create_profile(api, "qat-one", {"resources:CUSTOM_QAT": "1"})
    [request] = create_arqs(api, "qat-one")
    vf = qat_vf_deployables(api)["node1_0000:6b:00.3"]
    call(
        api,
        "PATCH",
        "/v2/accelerator_requests",
        {request["uuid"]: bind_ops(vf["rp_uuid"], str(uuid.uuid4()))},
    )
    assert arq(api, request["uuid"])["state"] == ArqState.BOUND

    for address in ("0000:6b:00.0", *(f"0000:6b:00.{n}" for n in range(1, 5))):
        gpu_server.remove(address)  # the QAT card is pulled, VFs and all

    def alarm_kinds() -> set[str]:
        alarms = call(api, "GET", "/v2/alarms").json()["alarms"]
        return {a["kind"] for a in alarms}

    wait_until(
        lambda: AlarmKind.ALLOCATED_HARDWARE_VANISHED in alarm_kinds(),
        "the allocation alarm",
        on_timeout=cluster.logs,
    )
    alarms = {a["kind"]: a for a in call(api, "GET", "/v2/alarms").json()["alarms"]}
    assert alarms[AlarmKind.ALLOCATED_HARDWARE_VANISHED]["subject"] == request["uuid"]
    assert "0000:6b:00.0" in alarms[AlarmKind.ALLOCATED_HARDWARE_VANISHED]["message"]
    assert AlarmKind.HARDWARE_VANISHED in alarms

"""The hello chain over mutual TLS, with certificates the test makes itself."""

from __future__ import annotations

import ssl
import uuid
from pathlib import Path

import httpx
import pytest

from accel.driver.fake_sysfs import FakeSysfs
from accel.states import ArqState
from tests.certificates import make_pki
from tests.integration.fleet import (
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    agents,
    bind_ops,
    wait_for_devices,
)
from tests.processes import TOKEN, Cluster


def test_every_component_speaks_mutual_tls(
    tmp_path: Path, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    tls = make_pki(tmp_path / "pki")
    cluster = Cluster(tmp_path / "logs", tls=tls)
    (tmp_path / "logs").mkdir()
    try:
        conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
        api = cluster.api(sqlite_url)
        agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
        driver = cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
        assert conductor.url.startswith("https://") and driver.url.startswith("https://")
        wait_for_devices(api, 4, cluster.logs())
        assert agents(api)["node1"]["endpoint"] == agent.endpoint

        hello = {"status": "READY", "endpoint": "127.0.0.1:1", "name": "x"}
        token = {"Authorization": f"Bearer {TOKEN}"}
        # Without a client certificate the handshake itself is refused.
        no_cert = ssl.create_default_context(cafile=str(tls.ca))
        with pytest.raises(httpx.HTTPError):
            httpx.post(conductor.url + "/v1/hello", json=hello, headers=token, verify=no_cert)
        # Plain HTTP to a TLS port gets nowhere either.
        with pytest.raises(httpx.HTTPError):
            httpx.post(
                conductor.url.replace("https", "http") + "/v1/hello", json=hello, headers=token
            )
        assert list(agents(api)) == ["node1"]

        # The api asks the conductor to bind over mutual TLS too.
        httpx.post(
            api.url + "/v2/device_profiles",
            json=[{"name": "gpu", "groups": [{"resources:PGPU": "1"}]}],
        )
        [arq] = httpx.post(
            api.url + "/v2/accelerator_requests", json={"device_profile_name": "gpu"}
        ).json()["arqs"]
        deployable = httpx.get(api.url + "/v2/deployables").json()["deployables"][0]
        bind = httpx.patch(
            api.url + "/v2/accelerator_requests",
            timeout=30,
            json={
                arq["uuid"]: bind_ops(deployable["rp_uuid"], str(uuid.uuid4())),
            },
        )
        assert bind.status_code == 202, bind.text
        bound = httpx.get(f"{api.url}/v2/accelerator_requests/{arq['uuid']}").json()
        assert bound["state"] == ArqState.BOUND
    finally:
        cluster.stop_all()

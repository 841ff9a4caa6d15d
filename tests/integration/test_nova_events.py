"""Nova's accelerator-request-bound events, from a real conductor to a recording
server on loopback that answers as Nova does, or with garbage, slowly, or not at all.

One stack for the module: a conductor with ``--nova-url`` (tries of half a second, three
of them), an api, and a GPU node. Each test binds its own instance's requests and
unbinds them after.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from accel.driver.fake_sysfs import build_gpu_server
from tests.integration.fleet import (
    AUTH,
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    bind_ops,
    samples,
    wait_for_devices,
)
from tests.integration.nova_recorder import NovaRecorder, Recorded, nova_recorder
from tests.processes import Cluster, Service, wait_until

NOVA_TOKEN = "accel-service-token-for-nova"
GPUS = ("node1_0000:31:00.0", "node1_0000:4b:00.0")


@dataclass
class Stack:
    cluster: Cluster
    conductor: Service
    api: Service
    nova: NovaRecorder
    rps: dict[str, str]

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(method, self.api.url + path, json=body, timeout=30)

    def bind_instance(self, *gpus: str) -> tuple[str, dict[str, str]]:
        """A new instance with one request per GPU named, bound in one PATCH (as Nova
        does); a name that is no GPU's makes that request fail."""
        created = self.call("POST", "/v2/accelerator_requests", {"device_profile_name": "gpu"})
        arqs = [created.json()["arqs"][0]["uuid"]]
        for _ in gpus[1:]:
            again = self.call("POST", "/v2/accelerator_requests", {"device_profile_name": "gpu"})
            arqs.append(again.json()["arqs"][0]["uuid"])
        instance = str(uuid.uuid4())
        patch = {
            arq: bind_ops(self.rps.get(gpu, str(uuid.UUID(int=9))), instance)
            for arq, gpu in zip(arqs, gpus, strict=True)
        }
        answer = self.call("PATCH", "/v2/accelerator_requests", patch)
        assert answer.status_code == 202, answer.text
        return instance, dict(zip(arqs, gpus, strict=True))

    def delete(self, instance: str) -> None:
        gone = self.call("DELETE", f"/v2/accelerator_requests?instance={instance}")
        assert gone.status_code == 204, gone.text

    def counted(self, outcome: str) -> float:
        key = ("accel_nova_events_total", (("outcome", outcome),))
        return samples(self.conductor, AUTH).get(key, 0.0)

    def events_of(self, instance: str, count: int) -> list[Recorded]:
        def seen() -> list[Recorded] | None:
            found = self.nova.for_instance(instance)
            return found if len(found) >= count else None

        return wait_until(seen, f"{count} posts for {instance}", on_timeout=self.cluster.logs)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("nova-events"))
    token_file = workdir / "openstack-token"
    token_file.write_text(NOVA_TOKEN + "\n")
    database = f"sqlite:///{workdir / 'accel.db'}"
    cluster = Cluster(workdir)
    with nova_recorder() as nova:
        try:
            conductor = cluster.conductor(
                database,
                **FAST_CONDUCTOR,
                nova_url=nova.url,
                openstack_token_file=token_file,
                nova_timeout=0.5,
                nova_attempts=3,
            )
            api = cluster.api(database)
            agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
            cluster.driver("GPU", agent, build_gpu_server(workdir / "node").root, **FAST_DRIVER)
            wait_for_devices(api, 4, cluster.logs())
            found = httpx.get(api.url + "/v2/deployables", timeout=10).json()["deployables"]
            rps = {d["name"]: d["rp_uuid"] for d in found}
            profile = [{"name": "gpu", "groups": [{"resources:PGPU": "1"}]}]
            made = httpx.post(api.url + "/v2/device_profiles", json=profile, timeout=10)
            assert made.status_code == 201, made.text
            yield Stack(cluster, conductor, api, nova, rps)
        finally:
            cluster.stop_all()


def test_one_post_per_instance_at_2_82_with_an_event_per_request(stack: Stack) -> None:
    stack.nova.reset()
    instance, arqs = stack.bind_instance(GPUS[0], "no-such-gpu")
    [post] = stack.events_of(instance, 1)
    assert post.path == "/v2.1/os-server-external-events"
    assert post.headers["OpenStack-API-Version"] == "compute 2.82"
    assert post.headers["X-Auth-Token"] == NOVA_TOKEN
    status = {arq: "completed" if gpu in GPUS else "failed" for arq, gpu in arqs.items()}
    assert sorted(post.body["events"], key=lambda e: e["tag"]) == sorted(
        (
            {
                "name": "accelerator-request-bound",
                "server_uuid": instance,
                "tag": arq,
                "status": state,
            }
            for arq, state in status.items()
        ),
        key=lambda e: e["tag"],
    )
    stack.delete(instance)
    # Deleting, or binding nothing new, tells Nova nothing more.
    assert len(stack.nova.for_instance(instance)) == 1


def test_nova_s_known_race_207_all_422_is_not_retried(stack: Stack) -> None:
    stack.nova.reset("race")
    sent = stack.counted("sent")
    instance, _ = stack.bind_instance(GPUS[0])
    stack.events_of(instance, 1)
    wait_until(lambda: stack.counted("sent") > sent or None, "the race counted as sent")
    assert [r.behaviour for r in stack.nova.for_instance(instance)] == ["race"]
    stack.delete(instance)


@pytest.mark.parametrize("first", ["garbage", "silent", "error"])
def test_a_nova_that_answers_garbage_slowly_or_fails_is_tried_again(
    stack: Stack, first: str
) -> None:
    stack.nova.reset(first)  # type: ignore[arg-type]
    retried = stack.counted("retry")
    instance, _ = stack.bind_instance(GPUS[0])
    # The bind never waited on Nova: its request is Bound already.
    listed = stack.call("GET", f"/v2/accelerator_requests?instance={instance}").json()["arqs"]
    assert [a["state"] for a in listed] == ["Bound"]
    posts = stack.events_of(instance, 2)
    assert [p.behaviour for p in posts] == [first, "ok"]
    assert posts[0].body == posts[1].body
    assert stack.counted("retry") > retried
    stack.delete(instance)


def test_a_nova_that_never_answers_is_given_up_after_the_last_try(stack: Stack) -> None:
    stack.nova.reset("silent", "silent", "silent")
    gave_up = stack.counted("gave_up")
    instance, _ = stack.bind_instance(GPUS[0])
    posts = stack.events_of(instance, 3)
    wait_until(lambda: stack.counted("gave_up") > gave_up or None, "the event given up")
    assert [p.behaviour for p in posts] == ["silent"] * 3
    assert len(stack.nova.for_instance(instance)) == 3  # and no fourth
    stack.delete(instance)


def test_a_conductor_killed_while_sending_leaves_the_event_to_the_next(stack: Stack) -> None:
    stack.nova.reset("silent")
    instance, _ = stack.bind_instance(GPUS[1])
    stack.events_of(instance, 1)  # the conductor is sending it, and hears nothing
    stack.conductor.kill()
    stack.conductor = stack.cluster.restart(stack.conductor)
    posts = stack.events_of(instance, 2)
    assert [p.behaviour for p in posts] == ["silent", "ok"]
    stack.delete(instance)

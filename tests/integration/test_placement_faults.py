"""A hostile operator against the Placement reports: conductors killed with -9 in
the middle of a report, parts started in every order, two conductors racing on a
fresh Placement. Real conductors (processes), a real Placement 16 (one per module)."""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from accel.cli.argv import accel_argv
from accel.cli.fleet_daemons import api, conductor
from accel.cli.node_daemons import agent, driver
from accel.conductor.placement.tree import desired_trees
from accel.conductor.reconcile import store_inventory
from accel.db.columns import utcnow
from accel.db.models import Deployable, Device, PlacementNode
from accel.driver.fake_sysfs import FakeSysfs, build_gpu_server
from accel.internal.schemas import Kind
from tests.databases import migrated_sessions
from tests.integration.fleet import FAST_AGENT, FAST_CONDUCTOR, FAST_DRIVER, wait_for_devices
from tests.integration.placement_proxy import placement_proxy
from tests.os_services.placement_rounds import (
    T0,
    hardware,
    loop_for,
    node_row,
    run_round,
    store,
)
from tests.placement_service import (
    TOKEN,
    ThrowawayPlacement,
    children,
    make_root,
    placement_venv,
    throwaway_placement,
)
from tests.processes import Cluster, Service, bound_socket, run_accel, url_of, wait_until


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    with migrated_sessions(sqlite_url) as sessions:
        yield sessions


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "openstack-token"
    path.write_text(TOKEN)
    return path


def in_step(
    placement: ThrowawayPlacement, sessions: sessionmaker[Session], node: str, root: str
) -> bool:
    """Placement holds exactly accel's tree for ``node`` (no orphan, nothing missing,
    inventories and traits equal), and the report is not pending."""
    with sessions() as session:
        tree = desired_trees(session, [node]).get(node)
        row = session.scalar(select(PlacementNode).where(PlacementNode.node == node))
    if tree is None or row is None or row.pending:
        return False
    wanted = {
        child.name: {
            "uuid": child.uuid,
            "parent": root,
            "inventories": child.inventories,
            "traits": set(child.traits),
        }
        for child in tree.children
    }
    found = {
        name: {
            **child,
            "inventories": {
                rc: {key: fields[key] for key in ("total", "max_unit", "reserved")}
                for rc, fields in child["inventories"].items()
            },
        }
        for name, child in children(placement, root).items()
    }
    return found == wanted


def vanish(sessions: sessionmaker[Session], node: str, gpu_server: FakeSysfs, name: str) -> None:
    """The device behind deployable ``name`` is gone from the node's next report."""
    with sessions() as session:
        gone = session.scalar(select(Device.uuid).join(Deployable).where(Deployable.name == name))
    found = hardware(gpu_server, node)
    kept = [entry for entry in found.hardware if str(entry.uuid) != gone]
    later = T0 + dt.timedelta(minutes=5)
    store_inventory(
        sessions,
        node,
        found.model_copy(update={"hardware": kept}),
        later,
        later,
        later + dt.timedelta(minutes=1),
    )


def lapse_lease(sessions: sessionmaker[Session], node: str) -> None:
    """As if the dead conductor's lease (120 s) had run out."""
    with sessions.begin() as session:
        session.execute(
            update(PlacementNode)
            .where(PlacementNode.node == node)
            .values(lease_until=utcnow() - dt.timedelta(seconds=1))
        )


def holder(sessions: sessionmaker[Session], node: str) -> str | None:
    with sessions() as session:
        return session.scalar(select(PlacementNode.owner).where(PlacementNode.node == node))


def test_a_conductor_killed_mid_report_leaves_it_to_the_next_without_orphans(
    cluster: Cluster,
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    sessions: sessionmaker[Session],
    sqlite_url: str,
    token: Path,
) -> None:
    node = f"killed-{uuid.uuid4().hex[:8]}"
    root = make_root(placement, node)
    store(sessions, node, hardware(gpu_server, node))
    settings: dict[str, Any] = {"openstack_token_file": token, **FAST_CONDUCTOR}
    with placement_proxy(placement.url) as proxy:
        # A makes the node's first provider, and dies writing its inventory.
        proxy.hold(lambda method, path: method == "PUT" and path.endswith("/inventories"))
        first = cluster.conductor(
            sqlite_url, name="conductor-a", placement_url=proxy.url, **settings
        )
        wait_until(proxy.held.is_set, "conductor-a inside its report", on_timeout=cluster.logs)
        first.kill()
        proxy.release.set()
        made = children(placement, root)
        assert len(made) == 1 and next(iter(made.values()))["inventories"] == {}
        assert holder(sessions, node) == "conductor-a"
        # Its device vanishes before anyone reports again: the half-made provider is
        # nowhere in what accel recorded, and must still go.
        vanish(sessions, node, gpu_server, next(iter(made)))
        lapse_lease(sessions, node)

        # B takes the node over, and is killed in its turn setting traits.
        proxy.hold(lambda method, path: method == "PUT" and path.endswith("/traits"))
        second = cluster.conductor(
            sqlite_url, name="conductor-b", placement_url=proxy.url, **settings
        )
        wait_until(proxy.held.is_set, "conductor-b inside its report", on_timeout=cluster.logs)
        second.kill()
        proxy.release.set()
        assert holder(sessions, node) == "conductor-b"

        # B restarted under its name takes its own lease back at once, and finishes.
        cluster.restart(second)
        wait_until(
            lambda: in_step(placement, sessions, node, root),
            "Placement to hold accel's tree exactly",
            on_timeout=lambda: f"{children(placement, root)}\n{cluster.logs()}",
        )
    api = cluster.api(sqlite_url)
    result = run_accel("placement", "status", "--json", "--api-url", api.url)
    assert result.returncode == 0, result.stderr
    assert '"pending": true' not in result.stdout and node in result.stdout


def start_part(
    cluster: Cluster, part: str, node: str, sysfs: Path, database: str, **settings: Any
) -> Service:
    """One part of a node's stack, not waited for. ``settings["conductors"]``: the
    agent's conductors (each conductor's socket is bound beforehand)."""
    if part == "driver":
        argv = accel_argv(
            driver, kind="GPU", agent=settings["agent_url"], sysfs_root=sysfs, **FAST_DRIVER
        )
        return cluster.spawn(part, argv, None, "")
    sock = settings["sockets"][part]
    listen = {"listen_fd": sock.fileno()}
    if part.startswith("conductor"):
        argv = accel_argv(
            conductor,
            database=database,
            name=part,
            **settings["conductor"],
            **FAST_CONDUCTOR,
            **listen,
        )
    elif part == "api":
        argv = accel_argv(api, database=database, auth="noauth", **listen)
    else:
        argv = accel_argv(
            agent, conductor=settings["conductors"], name=node, **FAST_AGENT, **listen
        )
    return cluster.spawn(part, argv, sock, url_of(sock))


def stack_settings(parts: tuple[str, ...], placement_url: str, token: Path) -> dict[str, Any]:
    sockets = {part: bound_socket() for part in parts if part != "driver"}
    return {
        "sockets": sockets,
        "agent_url": url_of(sockets["agent"]),
        "conductors": ",".join(url_of(s) for p, s in sockets.items() if p.startswith("conductor")),
        "conductor": {
            "placement_url": placement_url,
            "openstack_token_file": token,
            # Configured, never called: no bind happens here.
            "nova_url": f"{placement_url}/nova-not-called",
        },
    }


def no_part_exited(cluster: Cluster) -> None:
    exited = [service.name for service in cluster.services if not service.alive()]
    assert exited == [], cluster.logs()


# Each part before the one it talks to. The usual order (conductor, api, agent,
# driver after Placement) is tests/integration/test_placement_stack.py's.
@pytest.mark.parametrize("order", [("driver", "agent", "api", "conductor")])
def test_placement_first_then_each_part_in_turn(
    cluster: Cluster,
    placement: ThrowawayPlacement,
    sessions: sessionmaker[Session],
    sqlite_url: str,
    token: Path,
    tmp_path: Path,
    order: tuple[str, ...],
) -> None:
    node = f"order-{uuid.uuid4().hex[:8]}"
    root = make_root(placement, node)
    sysfs = build_gpu_server(tmp_path / node).root
    settings = stack_settings(order, placement.url, token)
    for part in order:
        service = start_part(cluster, part, node, sysfs, sqlite_url, **settings)
        if service.sock is not None:
            wait_until(service.serves, f"{part} up", on_timeout=cluster.logs)
    wait_until(
        lambda: in_step(placement, sessions, node, root) and len(children(placement, root)) == 4,
        "the node's 4 GPUs in Placement",
        on_timeout=cluster.logs,
    )
    no_part_exited(cluster)


def test_every_part_at_once_two_conductors_and_a_fresh_placement_last(
    cluster: Cluster,
    sessions: sessionmaker[Session],
    sqlite_url: str,
    token: Path,
    tmp_path: Path,
) -> None:
    """Two conductors, an api, an agent and its driver started at one instant, with a
    Placement that refuses connections (not there yet); it comes up fresh, without the
    custom classes and traits that both conductors then make at once."""
    venv = placement_venv()
    if venv is None:
        pytest.skip("no Placement here (scripts/ensure-placement installs it)")
    node = f"instant-{uuid.uuid4().hex[:8]}"
    parts = ("conductor-a", "conductor-b", "api", "agent", "driver")
    not_yet = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    not_yet.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    settings = stack_settings(parts, url_of(not_yet), token)
    sysfs = build_gpu_server(tmp_path / node).root
    for part in parts:
        start_part(cluster, part, node, sysfs, sqlite_url, **settings)
    api_service = next(s for s in cluster.services if s.name == "api")
    wait_until(api_service.serves, "api up", on_timeout=cluster.logs)
    wait_for_devices(api_service, 4, on_timeout=cluster.logs)
    with throwaway_placement(venv, tmp_path / "placement", sock=not_yet) as fresh:
        root = make_root(fresh, node)
        wait_until(
            lambda: in_step(fresh, sessions, node, root) and len(children(fresh, root)) == 4,
            "the node's 4 GPUs in the fresh Placement",
            timeout=60.0,
            on_timeout=cluster.logs,
        )
    no_part_exited(cluster)


def test_a_provider_nobody_recorded_goes_only_if_it_is_of_cyborgs_scheme(
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
) -> None:
    """A child named and numbered as Cyborg names them, that accel neither wants nor
    recorded (its maker died before recording it), is removed; nova-compute's own
    children (vGPU, other uuids) are never touched."""
    node = f"orphan-{uuid.uuid4().hex[:8]}"
    root = make_root(placement, node)
    orphan = f"{node}_0000:99:00.0"
    with placement.client() as client:
        for name, rp in (
            (orphan, str(uuid.uuid3(uuid.NAMESPACE_DNS, orphan))),
            (f"{node}_pci_0000_99_00_0", str(uuid.uuid4())),
        ):
            body = {"uuid": rp, "name": name, "parent_provider_uuid": root}
            assert client.post("/resource_providers", json=body).status_code == 200
    store(sessions, node, hardware(gpu_server, node, (Kind.FPGA,)))
    run_round(loop_for(sessions, placement))
    assert sorted(children(placement, root)) == [f"{node}_0000:86:00.0", f"{node}_pci_0000_99_00_0"]
    assert not node_row(sessions, node).pending

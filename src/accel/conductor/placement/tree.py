"""The tree each node should have in Placement, computed from the database.

Cyborg's tree: the root is the compute node's provider (nova-compute's, found by
name), with one child per deployable, named as the deployable and with its uuid
(``DeployablePlan.rp_uuid``, which ``/v2/deployables`` shows as ``rp_uuid``). A
child's inventory is its resource class with ``total``, ``max_unit = total`` and
``reserved``: all of it while accel would not hand the device out (``offer``).
Its traits are the deployable's plus ``OWNER_CYBORG``.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from accel.conductor.health import HEALTH_COLUMNS, why_unhealthy
from accel.conductor.placement.offer import why_not_offered, why_not_whole_gpu
from accel.db.models import Agent, Attribute, Deployable, Device

OWNER_TRAIT = "OWNER_CYBORG"


def digest_of(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ChildProvider:
    uuid: str
    name: str
    rc: str
    total: int
    # Why nothing of it is offered (reserved = total), or None.
    withheld: str | None
    traits: tuple[str, ...]

    @property
    def inventories(self) -> dict[str, dict[str, int]]:
        reserved = self.total if self.withheld else 0
        return {self.rc: {"total": self.total, "max_unit": self.total, "reserved": reserved}}

    @cached_property
    def inventory_digest(self) -> str:
        return digest_of(self.inventories)

    @cached_property
    def traits_digest(self) -> str:
        return digest_of(sorted(self.traits))


@dataclass(frozen=True)
class NodeTree:
    node: str
    root_name: str
    children: tuple[ChildProvider, ...]

    @cached_property
    def digest(self) -> str:
        return digest_of(
            [
                self.root_name,
                [(c.uuid, c.name, c.inventory_digest, c.traits_digest) for c in self.children],
            ]
        )


def desired_trees(session: Session, nodes: Collection[str] | None = None) -> dict[str, NodeTree]:
    """Every node's tree (of ``nodes`` only, if given), by node name, in a few queries."""
    agents = select(Agent.id, Agent.name, Agent.resource_provider_name, Agent.state)
    if nodes is not None:
        agents = agents.where(Agent.name.in_(list(nodes)))
    by_id = {row.id: row for row in session.execute(agents)}
    if not by_id:
        return {}
    rows = session.execute(
        select(
            Device.agent_id,
            Device.uuid,
            Device.hostname,
            Device.status,
            Device.setup_required,
            Device.reboot_required,
            Device.pci_address,
            Deployable.id,
            Deployable.name,
            Deployable.rp_uuid,
            Deployable.num_accelerators,
            *HEALTH_COLUMNS,
        )
        .join(Deployable, Deployable.device_id == Device.id)
        .where(Device.present.is_(True), Device.agent_id.in_(list(by_id)))
        .order_by(Deployable.name)
    ).all()
    attributes: dict[int, dict[str, str]] = defaultdict(dict)
    ids = [row.id for row in rows]
    for start in range(0, len(ids), 2000):
        for deployable_id, key, value in session.execute(
            select(Attribute.deployable_id, Attribute.key, Attribute.value).where(
                Attribute.deployable_id.in_(ids[start : start + 2000])
            )
        ):
            attributes[deployable_id][key] = value
    children: dict[int, list[ChildProvider]] = defaultdict(list)
    for row in rows:
        agent = by_id[row.agent_id]
        attrs = attributes[row.id]
        rc = attrs.get("rc")
        if rc is None or row.rp_uuid is None or row.num_accelerators < 1:
            continue
        withheld = why_not_offered(
            uuid=row.uuid,
            hostname=row.hostname,
            present=True,
            status=row.status,
            setup_required=row.setup_required,
            reboot_required=row.reboot_required,
            agent_state=agent.state,
        ) or why_not_whole_gpu(rc, row.name, row.hostname, row.pci_address)
        # A failed device, or VF, is reserved as a bind would refuse it.
        withheld = withheld or why_unhealthy(row, row.name)
        traits = {value for key, value in attrs.items() if key.startswith("trait")}
        children[row.agent_id].append(
            ChildProvider(
                uuid=row.rp_uuid,
                name=row.name,
                rc=rc,
                total=row.num_accelerators,
                withheld=withheld,
                traits=tuple(sorted(traits | {OWNER_TRAIT})),
            )
        )
    return {
        agent.name: NodeTree(
            node=agent.name,
            root_name=agent.resource_provider_name or agent.name,
            children=tuple(children[agent_id]),
        )
        for agent_id, agent in by_id.items()
    }

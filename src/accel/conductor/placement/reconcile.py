"""One node's reconciliation: Placement is brought to the node's tree, whatever it holds.

The tree in Placement is read (the root by name, then its tree, two calls; one, the
tree, where the last report found the root), and each
child is compared with what accel last left on it (``Left``). A child whose
generation is the one accel left, and whose wanted inventory and traits are the ones
accel wrote, costs nothing more; one whose generation moved (allocations, a hand, a
tool) is read again and put right; a missing one is made again. Nothing is believed
that Placement has not confirmed: what failed stays to do, and the caller keeps the
node pending.

Differences from Cyborg, on purpose (research file, part B 1.6): a 409 is re-read
and retried; a missing root is an error and an alarm, never an orphan root; a
vanished deployable's provider that allocations still hold is kept, fully reserved,
until they are gone.
"""

from __future__ import annotations

import logging
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any

from accel.conductor.placement.client import (
    GenerationConflict,
    PlacementClient,
    PlacementError,
    PlacementUnreachable,
    Provider,
)
from accel.conductor.placement.tree import ChildProvider, NodeTree, digest_of

log = logging.getLogger(__name__)

# Times a write that met a generation conflict is re-read and tried again.
CONFLICT_RETRIES = 3


@dataclass(frozen=True)
class Left:
    """What accel last left on one provider it made."""

    generation: int
    inventory: str
    traits: str
    # Its deployable vanished, but allocations hold it: kept with reserved = total.
    in_use: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"g": self.generation, "i": self.inventory, "t": self.traits, "u": self.in_use}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Left:
        return cls(int(data["g"]), str(data["i"]), str(data["t"]), bool(data.get("u", False)))


@dataclass
class Outcome:
    root_uuid: str | None
    providers: dict[str, Left]
    errors: list[str] = field(default_factory=list)
    root_missing: bool = False
    # Vanished deployables' providers that allocations still hold.
    in_use: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return not self.errors and not self.root_missing and not self.in_use

    @property
    def error(self) -> str | None:
        problems = list(self.errors)
        if self.in_use:
            problems.append(
                f"{len(self.in_use)} vanished provider(s) still hold allocations, kept "
                f"fully reserved: {', '.join(sorted(self.in_use))}"
            )
        return "; ".join(problems) or None


def reconcile_node(
    client: PlacementClient,
    tree: NodeTree,
    left: dict[str, Left],
    known_root: str | None = None,
) -> Outcome:
    """Brings the node's tree in Placement to ``tree``; ``known_root``: the root's uuid
    as the last report found it. Raises ``PlacementUnreachable`` when Placement does
    not answer; every other failure is in the outcome."""
    if not tree.children and not left:
        return Outcome(None, {})  # nothing to offer: the node's root is not needed
    root, actual = _root_and_tree(client, tree.root_name, known_root)
    if root is None:
        return Outcome(
            None,
            dict(left),
            [f"Placement has no provider named {tree.root_name} (nova-compute makes it)"],
            root_missing=True,
        )
    outcome = Outcome(root.uuid, {})
    wanted = {child.uuid for child in tree.children}
    if any(_needs_write(child, actual.get(child.uuid), left) for child in tree.children):
        client.ensure_custom(
            {child.rc for child in tree.children},
            {trait for child in tree.children for trait in child.traits},
        )
    for child in tree.children:
        try:
            outcome.providers[child.uuid] = _reconcile_child(
                client, root.uuid, child, actual.get(child.uuid), left.get(child.uuid)
            )
        except PlacementUnreachable:
            raise
        except PlacementError as exc:
            # A class or trait deleted behind accel's back is made again next time.
            client.forget_custom()
            outcome.errors.append(f"{child.name}: {exc}")
            if child.uuid in left:
                outcome.providers[child.uuid] = left[child.uuid]
    for uuid, was in left.items():
        if uuid not in wanted:
            _remove(client, uuid, was, outcome)
    for provider in actual.values():
        if _orphan(provider, root.uuid, wanted, left):
            _remove(client, provider.uuid, Left(provider.generation, "", ""), outcome)
    return outcome


def _orphan(provider: Provider, root: str, wanted: set[str], left: dict[str, Left]) -> bool:
    """A child named and numbered as Cyborg's scheme makes them (uuid3 of its name)
    that accel neither wants nor recorded: made by a conductor that died before it
    could record it (or by Cyborg before accel), its deployable gone since."""
    return (
        provider.parent == root
        and provider.uuid not in wanted
        and provider.uuid not in left
        and provider.uuid == str(uuidlib.uuid3(uuidlib.NAMESPACE_DNS, provider.name))
    )


def _root_and_tree(
    client: PlacementClient, name: str, known: str | None
) -> tuple[Provider | None, dict[str, Provider]]:
    """The node's root and every provider in its tree. The tree of the root the last
    report found is one call; it is believed only if that root is still a root of
    this name (nova-compute may have made it again, or the node be known by another
    name now). Otherwise, or the first time, the root is looked up by name first."""
    if known is not None:
        actual = client.tree(known)
        root = actual.get(known)
        if root is not None and root.name == name and root.parent is None:
            return root, actual
    root = client.find_root(name)
    return (root, client.tree(root.uuid)) if root is not None else (None, {})


def _needs_write(child: ChildProvider, actual: Provider | None, left: dict[str, Left]) -> bool:
    was = left.get(child.uuid)
    return (
        actual is None
        or was is None
        or was.generation != actual.generation
        or was.inventory != child.inventory_digest
        or was.traits != child.traits_digest
    )


def _reconcile_child(
    client: PlacementClient,
    root: str,
    child: ChildProvider,
    actual: Provider | None,
    was: Left | None,
) -> Left:
    for _ in range(CONFLICT_RETRIES + 1):
        try:
            return _write_child(client, root, child, actual, was)
        except GenerationConflict as exc:
            log.info("placement: %s changed under accel (%s); reading it again", child.name, exc)
            actual = client.provider(child.uuid)
            was = None  # whatever accel left is no longer known to be there
    raise PlacementError(f"kept conflicting after {CONFLICT_RETRIES} retries")


def _write_child(
    client: PlacementClient,
    root: str,
    child: ChildProvider,
    actual: Provider | None,
    was: Left | None,
) -> Left:
    if actual is None:
        created = client.create(child.uuid, child.name, root)
        generation, write_inventory, write_traits = created.generation, True, True
    else:
        generation = actual.generation
        if actual.parent != root:
            raise PlacementError(
                f"provider {child.uuid} is under {actual.parent}, not the node's {root}"
            )
        if actual.name != child.name:
            generation = client.rename(actual, child.name)
            was = None
        if was is not None and not was.in_use and was.generation == generation:
            write_inventory = was.inventory != child.inventory_digest
            write_traits = was.traits != child.traits_digest
        else:
            # Touched since accel wrote it (allocations move generations too): read.
            generation, inventories = client.inventories(child.uuid)
            write_inventory = inventories != child.inventories
            generation, traits = client.traits(child.uuid)
            write_traits = traits != set(child.traits)
    if write_inventory:
        generation = client.put_inventories(child.uuid, generation, child.inventories)
    if write_traits:
        generation = client.put_traits(child.uuid, generation, child.traits)
    return Left(generation, child.inventory_digest, child.traits_digest)


def _remove(client: PlacementClient, uuid: str, was: Left, outcome: Outcome) -> None:
    """A provider accel made whose deployable is gone: deleted, unless allocations
    hold it; then it stays, with nothing of it offered, until they are gone."""
    try:
        client.delete(uuid)
        return
    except GenerationConflict:
        pass
    except PlacementError as exc:
        outcome.errors.append(f"deleting {uuid}: {exc}")
        outcome.providers[uuid] = was
        return
    try:
        generation, inventories = client.inventories(uuid)
        withheld = {
            rc: {**fields, "reserved": fields["total"]} for rc, fields in inventories.items()
        }
        if withheld != inventories:
            generation = client.put_inventories(uuid, generation, withheld)
        outcome.providers[uuid] = Left(generation, digest_of(withheld), was.traits, in_use=True)
        outcome.in_use.append(uuid)
    except PlacementUnreachable:
        raise
    except PlacementError as exc:
        outcome.errors.append(f"reserving {uuid}, which allocations hold: {exc}")
        outcome.providers[uuid] = was

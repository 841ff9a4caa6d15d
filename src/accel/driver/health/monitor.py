"""Polls the health of every device (and VF) the last discovery found, and lends each
discovery the health as of the last poll (a device new to it is read at once).

What keeps an idle node's polls cheap (docs/benchmarks.md, issue 25): a VF is read at
every ``VF_EVERY``-th poll only, the drivers of one process poll one at a time, and
what cannot change while a function exists (its upstream bridge, its maximum link)
is read once, and so is a file a function has not (``Absent``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread

from accel.driver.health.evidence import Absent, Counters, FirstLook, Reading
from accel.driver.health.fpga import fpga_readings
from accel.driver.health.gpu import GpuHealth, HealthNvml
from accel.driver.health.machine import DeviceMachine, fanned_out
from accel.driver.health.pcie import BridgeSteps, aer_readings, config_reading, link_readings
from accel.driver.health.policy import HealthPolicy
from accel.driver.health.qat import qat_readings
from accel.driver.pci import devices_dir
from accel.internal.schemas import HardwareEntry, Kind, MigInstance

log = logging.getLogger(__name__)

# Seconds between polls: a poll reads a few small files per device, cheap enough
# to run every few seconds (docs/benchmarks.md, "Health poll").
HEALTH_INTERVAL = 5.0
# A VF is read at every VF_EVERY-th poll (30 s at the default interval), its PF at
# every one. A VF's evidence is a subset of its PF's: it shares the PF's link, and
# a PF's fatal error or lost config space fails it anyway (the conductor fans a
# failed PF out to its VFs); so the fast entry into failed stays the PF's. A node's
# VFs were nine in ten of its reads (192 on issue 25's big node). A VF new to the
# monitor is read at once, as any device.
VF_EVERY = 6
# The drivers served in one process poll one at a time: five polls at once each
# hand the interpreter's lock to another at every read, for nothing. A poll that
# hangs holds the turn; the others then wait this long and go on without it.
TURN_WAIT = 2.0
_turn = threading.Lock()


@contextmanager
def polling_turn(wait: float | None = None) -> Iterator[bool]:
    """This process's turn to poll, or after ``wait`` s (``TURN_WAIT``) without it;
    whether it was had."""
    taken = _turn.acquire(timeout=TURN_WAIT if wait is None else wait)
    try:
        yield taken
    finally:
        if taken:
            _turn.release()


def _now() -> datetime:
    return datetime.now(UTC)


class HealthMonitor:
    """The health of one driver's devices; safe to call from several threads."""

    def __init__(
        self,
        kind: Kind,
        sysfs_root: Path,
        policy: HealthPolicy | None = None,
        nvml: HealthNvml | None = None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.kind = kind
        self.root = str(sysfs_root)
        self.devices = devices_dir(sysfs_root)
        self.policy = policy or HealthPolicy()
        self.gpu = GpuHealth(nvml, self.policy.ignored_xids) if nvml is not None else None
        self.clock = clock
        self.counters = Counters()
        self.machines: dict[str, DeviceMachine] = {}
        # Each MIG instance's own evidence, by (its GPU's address, its uuid).
        self.instances: dict[tuple[str, str], DeviceMachine] = {}
        self.polls = 0
        # Moves whenever a reported health may have: a device's changed, one was added
        # or dropped. With the same entries at the same count, ``attach`` answers its
        # last list again, which the driver has rendered already (discovery_http).
        self._changes = 0
        self._attached: tuple[Sequence[HardwareEntry], int, list[HardwareEntry]] | None = None
        self._parents: dict[str, str | None] = {}
        self._maxima: dict[str, tuple[str, str]] = {}
        # Each function's files found missing, with the kernel driver it had then.
        self._absent: dict[str, tuple[str | None, Absent]] = {}
        self._lock = threading.Lock()

    def poll(self, entries: Sequence[HardwareEntry]) -> bool:
        """Reads every device of ``entries`` (each VF at every ``VF_EVERY``-th poll)
        once; True if any device's health changed."""
        with polling_turn(), self._lock:
            self.polls += 1
            return self._poll(entries, forget=True)

    def attach(self, entries: Sequence[HardwareEntry]) -> list[HardwareEntry]:
        """``entries`` with each device's and VF's health as of the last poll: the very
        list of the last call when its ``entries`` were these and no health changed."""
        with self._lock:
            unseen = [e for e in entries if not self._known(e)]
            if unseen:
                counters, self.counters = self.counters, FirstLook(self.counters)
                try:
                    self._poll(unseen, forget=False)
                finally:
                    self.counters = counters
            last = self._attached
            if last is not None and last[0] is entries and last[1] == self._changes:
                return last[2]
            attached = [self._with_health(entry) for entry in entries]
            self._attached = (entries, self._changes, attached)
            return attached

    def _known(self, entry: HardwareEntry) -> bool:
        """Whether the entry's device and every VF of it have been read before."""
        if entry.pci is None:
            return True
        addresses = [entry.pci.address, *(vf.address for vf in entry.virtual_functions)]
        return all(address in self.machines for address in addresses)

    def _with_health(self, entry: HardwareEntry) -> HardwareEntry:
        if entry.pci is None:
            return entry
        machine = self.machines.get(entry.pci.address)
        functions = [
            vf.model_copy(update={"health": self.machines[vf.address].health()})
            if vf.address in self.machines
            else vf
            for vf in entry.virtual_functions
        ]
        update: dict[str, object] = {
            "health": None if machine is None else machine.health(),
            "virtual_functions": functions,
        }
        if entry.gpu is not None and entry.gpu.mig_instances and machine is not None:
            update["gpu"] = entry.gpu.model_copy(
                update={"mig_instances": self._instances_with_health(entry.pci.address, entry)}
            )
        return entry.model_copy(update=update)

    def _instances_with_health(self, address: str, entry: HardwareEntry) -> list[MigInstance]:
        """Each MIG instance's health: its own, or its GPU's where that is worse."""
        assert entry.gpu is not None
        gpu = self.machines[address].health()
        found = []
        for instance in entry.gpu.mig_instances:
            own = self.instances.get((address, instance.uuid or ""))
            health = fanned_out(gpu, None if own is None else own.health())
            found.append(instance.model_copy(update={"health": health}))
        return found

    def _observe_instances(self, now: datetime) -> bool:
        """Takes this poll's readings of MIG instances; True if any one's health changed."""
        if self.gpu is None:
            return False
        changed = False
        for address, readings in self.gpu.take_instances().items():
            for key in [k for k in self.instances if k[0] == address and k[1] not in readings]:
                del self.instances[key]  # MIG reconfigured: that instance is gone
                self._changes += 1
            for uuid, taken in readings.items():
                if (address, uuid) not in self.instances:
                    self._changes += 1
                machine = self.instances.setdefault(
                    (address, uuid), DeviceMachine(self.policy, now)
                )
                changed = machine.observe(taken, now) or changed
        return changed

    def _poll(self, entries: Sequence[HardwareEntry], forget: bool) -> bool:
        now = self.clock()
        bridges = BridgeSteps(self.counters, parents=self._parents)
        vf_turn = not forget or self.polls % VF_EVERY == 0
        changed = False
        seen = set()
        for entry in entries:
            if entry.pci is None:
                continue
            functions = [(entry.pci.address, entry.pci.driver, False)]
            functions += [(vf.address, vf.driver, True) for vf in entry.virtual_functions]
            for address, driver, virtual in functions:
                seen.add(address)
                machine = self.machines.get(address)
                if virtual and machine is not None and not vf_turn:
                    continue
                readings = self._read(address, virtual, bridges, self._absent_of(address, driver))
                if machine is None:
                    machine = self.machines[address] = DeviceMachine(self.policy, now)
                    self._changes += 1
                changed = machine.observe(readings, now) or changed
        changed = self._observe_instances(now) or changed
        if forget:
            for address in set(self.machines) - seen:
                self._changes += 1
                del self.machines[address]
                self._parents.pop(f"{self.devices}/{address}", None)
                self._maxima.pop(f"{self.devices}/{address}", None)
                self._absent.pop(address, None)
                self.counters.forget(f"{self.devices}/{address}/")
                self.counters.forget(f"nvml/{address}/")
                if self.gpu is not None:
                    self.gpu.forget(address)
                for key in [k for k in self.instances if k[0] == address]:
                    del self.instances[key]
        if changed:
            self._changes += 1
        return changed

    def _absent_of(self, address: str, driver: str | None) -> Absent:
        """The function's files found missing while it had this driver (binding another
        driver makes and removes that driver's files)."""
        known = self._absent.get(address)
        if known is None or known[0] != driver:
            known = self._absent[address] = (driver, Absent())
        return known[1]

    def _read(
        self, address: str, virtual: bool, bridges: BridgeSteps, absent: Absent
    ) -> list[Reading]:
        directory = f"{self.devices}/{address}"
        limit = self.policy.correctable_limit
        readings = [config_reading(directory, absent)]
        # A VF shares its PF's link: the link and the bridge above it are the PF's.
        upstream = None if virtual else bridges
        readings += aer_readings(directory, self.counters, upstream, limit, absent)
        if virtual:
            return readings
        readings += link_readings(directory, self._maxima, absent)
        if self.kind is Kind.QAT:
            readings += qat_readings(self.root, address, directory, self.counters, limit, absent)
        elif self.kind is Kind.FPGA:
            readings += fpga_readings(directory)
        elif self.kind is Kind.GPU and self.gpu is not None:
            readings += self.gpu.readings(address, self.counters)
        return readings


async def poll_forever(
    monitor: HealthMonitor,
    interval: float,
    entries: Callable[[], Sequence[HardwareEntry]],
    on_change: Callable[[], object],
) -> None:
    """Polls every ``interval`` seconds; a change calls ``on_change`` (a fresh discovery)."""
    while True:
        await asyncio.sleep(interval)
        try:
            changed = await anyio.to_thread.run_sync(monitor.poll, entries())
        except Exception:  # a reader's bug must not end health polling for good
            log.exception("health poll failed")
            continue
        if changed:
            on_change()

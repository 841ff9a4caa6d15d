"""NVIDIA evidence through NVML, for GPUs the host's driver holds (a GPU bound to
vfio-pci is invisible to NVML, and its NVML checks simply read nothing).

XIDs come from an event set per GPU, drained without waiting at every poll; the rest
is polled: uncorrected ECC, pending page retirement or row remapping, row-remap
failure, the GPU recovery action (NVML field 230, r570+ drivers), GPU lost (error 15
from any call) and the temperature against its slowdown threshold. Every query may
fail on its own, or be missing from an older pynvml: that check reads nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Protocol, TypeVar

from accel.driver.health.evidence import Counters, Reading, unread

GPU_CHECKS = (
    "gpu_lost",
    "gpu_xid",
    "gpu_ecc",
    "gpu_memory_pending",
    "gpu_row_remap_failure",
    "gpu_recovery_action",
    "gpu_temperature",
)
ERROR_GPU_IS_LOST = 15  # NVML_ERROR_GPU_IS_LOST
EVENT_XID = 0x8  # nvmlEventTypeXidCriticalError
FIELD_RECOVERY_ACTION = 230  # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
MEMORY_UNCORRECTED, VOLATILE = 1, 0
TEMPERATURE_GPU, THRESHOLD_SLOWDOWN = 0, 1
RECOVERY_ACTIONS = {
    0: "none",
    1: "gpu reset",
    2: "node reboot",
    3: "drain p2p",
    4: "drain and reset",
    5: "recover imex domain",
}
# Application errors by NVIDIA's catalog (graphics exception, page fault, stopped
# processing, preemptive cleanup, video exception, contained ECC error: restart the
# app): they say nothing about the device. 109 (context switch timeout) asks for a
# GPU reset in the catalog, so unlike NVIDIA's device plugin it is not ignored.
DEFAULT_IGNORED_XIDS = frozenset({13, 31, 43, 45, 68, 94})
MAX_EVENTS_PER_POLL = 64
MIG_ENABLED = 1  # NVML_DEVICE_MIG_ENABLE
# An event's GPU instance id when NVML does not scope it to a MIG instance.
NO_INSTANCE = 0xFFFFFFFF
Value = TypeVar("Value")


class HealthNvml(Protocol):
    """The part of pynvml's API the health checks use (pynvml's own names)."""

    NVMLError: type[Exception]

    def nvmlDeviceGetHandleByPciBusId(self, bus_id: str) -> Any: ...
    def nvmlEventSetCreate(self) -> Any: ...
    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int, eventSet: Any) -> None: ...
    def nvmlEventSetWait_v2(self, eventSet: Any, timeoutms: int) -> Any: ...
    def nvmlEventSetFree(self, eventSet: Any) -> None: ...
    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int: ...
    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Any) -> int: ...
    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]: ...
    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: list[int]) -> Any: ...
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    def nvmlDeviceGetTemperatureThreshold(self, handle: Any, threshold: int) -> int: ...
    def nvmlDeviceGetMigMode(self, handle: Any) -> tuple[int, int]: ...
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int: ...
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any: ...
    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...


class _Lost(Exception):
    pass


class GpuHealth:
    """One driver's NVML health reader; keeps an event set per GPU between polls."""

    def __init__(self, library: HealthNvml, ignored_xids: Iterable[int]) -> None:
        self.library = library
        self.ignored_xids = frozenset(ignored_xids)
        self._event_sets: dict[str, Any] = {}
        # Per MIG-enabled GPU, this poll's readings of each MIG instance (by its uuid).
        self.instances: dict[str, dict[str, list[Reading]]] = {}

    def _ask(self, query: Callable[[], Value]) -> Value | None:
        try:
            return query()
        except self.library.NVMLError as exc:
            if getattr(exc, "value", None) == ERROR_GPU_IS_LOST:
                raise _Lost from exc
            return None
        except AttributeError:  # an older pynvml without this call
            return None

    def readings(self, address: str, counters: Counters) -> list[Reading]:
        self.instances.pop(address, None)
        try:
            handle = self._ask(lambda: self.library.nvmlDeviceGetHandleByPciBusId(address))
            if handle is None:
                return [unread(check) for check in GPU_CHECKS]
            return [Reading("gpu_lost", False, "answers"), *self._polled(address, handle, counters)]
        except _Lost:
            self._event_sets.pop(address, None)
            lost = Reading("gpu_lost", True, "GPU is lost (fallen off the bus)", new=True)
            return [lost, *(unread(check) for check in GPU_CHECKS[1:])]

    def _polled(self, address: str, handle: Any, counters: Counters) -> list[Reading]:
        nvml = self.library
        events = self._xids(address, handle)
        xids = [xid for xid, instance in events if instance is None]
        ecc = self._ask(
            lambda: nvml.nvmlDeviceGetTotalEccErrors(handle, MEMORY_UNCORRECTED, VOLATILE)
        )
        pages = self._ask(lambda: nvml.nvmlDeviceGetRetiredPagesPendingStatus(handle))
        rows = self._ask(lambda: nvml.nvmlDeviceGetRemappedRows(handle))
        action = self._recovery_action(handle)
        temperature = self._ask(lambda: nvml.nvmlDeviceGetTemperature(handle, TEMPERATURE_GPU))
        slowdown = self._ask(
            lambda: nvml.nvmlDeviceGetTemperatureThreshold(handle, THRESHOLD_SLOWDOWN)
        )
        readings = []
        if ecc is None:
            readings.append(unread("gpu_ecc"))
        else:
            step = counters.delta(f"nvml/{address}/ecc", int(ecc))
            readings.append(Reading("gpu_ecc", step > 0, f"+{step} uncorrected", new=step > 0))
        pending = [name for name, flag in (("pages", pages), ("rows", rows and rows[2])) if flag]
        if pages is None and rows is None:
            readings.append(unread("gpu_memory_pending"))
        else:
            value = f"{' and '.join(pending)} pending" if pending else "none pending"
            readings.append(Reading("gpu_memory_pending", bool(pending), value))
        if rows is None:
            readings.append(unread("gpu_row_remap_failure"))
        else:
            failed = bool(rows[3])
            readings.append(
                Reading("gpu_row_remap_failure", failed, "failed" if failed else "no failure")
            )
        if action is None:
            readings.append(unread("gpu_recovery_action"))
        else:
            name = RECOVERY_ACTIONS.get(action, str(action))
            readings.append(Reading("gpu_recovery_action", action != 0, name))
        if temperature is None or not slowdown:
            readings.append(unread("gpu_temperature"))
        else:
            hot = temperature >= slowdown
            readings.append(
                Reading("gpu_temperature", hot, f"{temperature} C (slowdown at {slowdown} C)")
            )
        # Silence after an XID is no evidence of health: the recovery action reading
        # "none" is, or where the driver lacks that field, memory with nothing pending.
        healthy = action == 0 if action is not None else (not pending and not (rows and rows[3]))
        evidence = healthy and (action is not None or pages is not None or rows is not None)
        readings.append(self._xid_reading(xids, evidence))
        scoped = [(xid, instance) for xid, instance in events if instance is not None]
        mode = self._ask(lambda: nvml.nvmlDeviceGetMigMode(handle))
        # An XID NVML scopes to a GPU instance is that MIG instance's alone. MIG off:
        # no instances, so the monitor drops what it kept of earlier ones.
        on = bool(scoped) or (mode is not None and mode[0] == MIG_ENABLED)
        self.instances[address] = {
            uuid: [self._xid_reading([x for x, i in scoped if i == instance], evidence)]
            for instance, uuid in (self._mig_uuids(handle) if on else {}).items()
        }
        return readings

    def _xid_reading(self, xids: list[int], evidence: bool) -> Reading:
        fatal = sorted(x for x in xids if x not in self.ignored_xids)
        if fatal:
            return Reading("gpu_xid", True, ", ".join(f"xid {x}" for x in fatal), True)
        return Reading("gpu_xid", False, "no fatal xid") if evidence else unread("gpu_xid")

    def _mig_uuids(self, handle: Any) -> dict[int, str]:
        """Each MIG instance's uuid by its GPU instance id (what an XID is scoped by)."""
        nvml = self.library
        found = {}
        for index in range(self._ask(lambda: nvml.nvmlDeviceGetMaxMigDeviceCount(handle)) or 0):
            mig = self._ask(partial(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, index))
            if mig is None:
                continue  # no instance in this slot
            instance = self._ask(partial(nvml.nvmlDeviceGetGpuInstanceId, mig))
            uuid = self._ask(partial(nvml.nvmlDeviceGetUUID, mig))
            if instance is not None and uuid is not None:
                found[int(instance)] = uuid if isinstance(uuid, str) else uuid.decode()
        return found

    def take_instances(self) -> dict[str, dict[str, list[Reading]]]:
        """The MIG instances' readings of the polls since the last take (each once)."""
        taken, self.instances = self.instances, {}
        return taken

    def forget(self, address: str) -> None:
        """A GPU gone from discovery: its event set is freed."""
        event_set = self._event_sets.pop(address, None)
        if event_set is not None:
            self._ask(lambda: self.library.nvmlEventSetFree(event_set))

    def _recovery_action(self, handle: Any) -> int | None:
        values = self._ask(
            lambda: self.library.nvmlDeviceGetFieldValues(handle, [FIELD_RECOVERY_ACTION])
        )
        if not values or getattr(values[0], "nvmlReturn", 1) != 0:
            return None
        return int(values[0].value.uiVal)

    def _xids(self, address: str, handle: Any) -> list[tuple[int, int | None]]:
        """The XIDs that arrived since the last poll, each with the GPU instance NVML
        scopes it to (None: the whole GPU); a first poll registers the set."""
        nvml = self.library
        event_set = self._event_sets.get(address)
        if event_set is None:
            event_set = self._ask(lambda: nvml.nvmlEventSetCreate())
            if event_set is None:
                return []

            def register() -> bool:
                nvml.nvmlDeviceRegisterEvents(handle, EVENT_XID, event_set)
                return True

            if self._ask(register) is None:
                return []
            self._event_sets[address] = event_set
        found = []
        for _ in range(MAX_EVENTS_PER_POLL):
            data = self._ask(lambda: nvml.nvmlEventSetWait_v2(event_set, 0))
            if data is None:  # NVML_ERROR_TIMEOUT: nothing more queued
                break
            if data.eventType & EVENT_XID:
                instance = getattr(data, "gpuInstanceId", NO_INSTANCE)
                scoped = None if instance in (None, NO_INSTANCE) else int(instance)
                found.append((int(data.eventData), scoped))
        return found

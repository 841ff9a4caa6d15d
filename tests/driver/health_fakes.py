"""NVML's health calls as pynvml presents them, for one GPU, changeable by a test."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from accel.driver.health.gpu import EVENT_XID, FIELD_RECOVERY_ACTION, MIG_ENABLED, NO_INSTANCE


class NVMLError(Exception):
    """pynvml's error: ``value`` is NVML's return code."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


NOT_FOUND, TIMEOUT, NOT_SUPPORTED, GPU_IS_LOST = 6, 10, 3, 15


@dataclass
class HealthNvmlFake:
    """One GPU at ``address``; every field is what the next query answers."""

    address: str
    # Queued events: an XID, or (XID, GPU instance) for one NVML scopes to a MIG instance.
    xids: list[int | tuple[int, int]] = field(default_factory=list)
    # MIG instances by GPU instance id (their uuids); none: MIG is off.
    mig: dict[int, str] = field(default_factory=dict)
    ecc_uncorrected: int = 0
    pages_pending: int = 0
    rows: tuple[int, int, int, int] = (0, 0, 0, 0)  # corrected, uncorrected, pending, failed
    recovery_action: int | None = 0  # None: the field is not supported (older driver)
    temperature: int = 45
    slowdown: int = 87
    lost: bool = False
    freed: int = 0  # event sets freed
    NVMLError: type[Exception] = NVMLError

    def _handle(self, handle: Any) -> None:
        if self.lost:
            raise NVMLError(GPU_IS_LOST)

    def nvmlDeviceGetHandleByPciBusId(self, bus_id: str) -> object:
        if bus_id != self.address:
            raise NVMLError(NOT_FOUND)
        if self.lost:
            raise NVMLError(GPU_IS_LOST)
        return "handle"

    def nvmlEventSetCreate(self) -> object:
        return "event set"

    def nvmlEventSetFree(self, eventSet: Any) -> None:
        self.freed += 1

    def nvmlDeviceRegisterEvents(self, handle: Any, eventTypes: int, eventSet: Any) -> None:
        assert eventTypes & EVENT_XID

    def nvmlEventSetWait_v2(self, eventSet: Any, timeoutms: int) -> Any:
        if not self.xids:
            raise NVMLError(TIMEOUT)
        event = self.xids.pop(0)
        xid, instance = event if isinstance(event, tuple) else (event, NO_INSTANCE)
        return SimpleNamespace(eventType=EVENT_XID, eventData=xid, gpuInstanceId=instance)

    def nvmlDeviceGetTotalEccErrors(self, handle: Any, errorType: int, counterType: int) -> int:
        self._handle(handle)
        return self.ecc_uncorrected

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Any) -> int:
        self._handle(handle)
        return self.pages_pending

    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]:
        self._handle(handle)
        return self.rows

    def nvmlDeviceGetFieldValues(self, handle: Any, fieldIds: list[int]) -> Any:
        self._handle(handle)
        assert fieldIds == [FIELD_RECOVERY_ACTION]
        if self.recovery_action is None:
            return [SimpleNamespace(nvmlReturn=NOT_SUPPORTED, value=SimpleNamespace(uiVal=0))]
        value = SimpleNamespace(uiVal=self.recovery_action)
        return [SimpleNamespace(nvmlReturn=0, value=value)]

    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int:
        self._handle(handle)
        return self.temperature

    def nvmlDeviceGetTemperatureThreshold(self, handle: Any, threshold: int) -> int:
        self._handle(handle)
        return self.slowdown

    def nvmlDeviceGetMigMode(self, handle: Any) -> tuple[int, int]:
        self._handle(handle)
        return (MIG_ENABLED, MIG_ENABLED) if self.mig else (0, 0)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int:
        self._handle(handle)
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> object:
        instances = sorted(self.mig)
        if index >= len(instances):
            raise NVMLError(NOT_FOUND)
        return ("mig", instances[index])

    def nvmlDeviceGetGpuInstanceId(self, handle: Any) -> int:
        return int(handle[1])

    def nvmlDeviceGetUUID(self, handle: Any) -> str:
        return self.mig[handle[1]] if isinstance(handle, tuple) else "GPU-fake"


class DiscoverableNvml(HealthNvmlFake):
    """The same GPU for discovery too: every query discovery makes is not supported."""

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("nvml"):
            raise AttributeError(name)

        def not_supported(*args: Any) -> Any:
            raise NVMLError(NOT_SUPPORTED)

        return not_supported

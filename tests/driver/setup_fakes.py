"""Test doubles for setup: the kernel's side of sysfs writes, and NVML with MIG.

``Kernel`` writes every value into the fake tree exactly as the driver asked (the
real writer), records the writes in order, and then does what Linux would do in
reply: make or remove VFs for ``sriov_numvfs``, drop a driver link for ``unbind``,
bind per ``driver_override`` for ``drivers_probe``, or refuse with an errno.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.driver.setup.common import write_attribute

# The gpu_server fixture's second E810 port: SR-IOV capable (128), no VFs yet.
E810_PORT_1 = FakeFunction(
    "0000:98:00.1",
    0x8086,
    0x1592,
    0x020000,
    subsystem_vendor=0x8086,
    subsystem_device=0x0002,
    revision=0x02,
    numa_node=1,
    driver="ice",
    iommu_group=61,
    sriov_total_vfs=128,
)
E810_VF = 0x1889


def snapshot(root: Path) -> dict[str, str]:
    """Every file's content and every link's target under ``root``: to see nothing changed."""
    found: dict[str, str] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                found[key] = "-> " + os.readlink(path)
            elif path.is_file():
                found[key] = path.read_text()
    return found


@dataclass
class Kernel:
    tree: FakeSysfs
    physical: dict[str, FakeFunction] = field(default_factory=dict)
    vf_device: int = E810_VF
    new_vf_driver: str | None = "iavf"
    refuse: dict[str, int] = field(default_factory=dict)  # file name -> errno
    writes: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, path: str, value: str) -> None:
        name = os.path.basename(path)
        if name in self.refuse:
            code = self.refuse[name]
            raise OSError(code, os.strerror(code))
        write_attribute(path, value)
        self.writes.append((self.relative(path), value))
        if name == "sriov_numvfs":
            self._set_vfs(Path(path).parent.name, int(value))
        elif name == "unbind":
            device = Path(path).parent.parent
            driver = Path(os.path.realpath(device / "driver"))
            (driver / value).unlink()
            (device / "driver").unlink()
        elif name == "drivers_probe":
            override = (self.tree.device_dir(value) / "driver_override").read_text().strip()
            if override != "(null)":
                self.tree.bind(value, override)

    def relative(self, path: str) -> str:
        return os.path.relpath(path, self.tree.root)

    def _set_vfs(self, address: str, count: int) -> None:
        pf_dir = self.tree.device_dir(address)
        for link in sorted(pf_dir.glob("virtfn*")):
            self.tree.remove(os.path.basename(os.readlink(link)))
            link.unlink()
        if count:
            physical = self.physical[address]
            bus = address.split(":")[1]
            # Device numbers from 0x10 up: clear of the other port's VFs (98:01.x).
            addresses = [f"0000:{bus}:{0x10 + n // 8:02x}.{n % 8}" for n in range(count)]
            self.tree.add_virtual_functions(
                physical, self.vf_device, addresses, driver=self.new_vf_driver
            )


class NVMLError(Exception):
    pass


H100_PROFILES = {
    # index -> (NVML profile id, slices, name): ids differ from indexes on purpose.
    0: (19, 1, "MIG 1g.10gb"),
    2: (9, 3, "MIG 3g.40gb"),
    4: (0, 7, "MIG 7g.80gb"),
    9: (15, 1, "MIG 1g.20gb"),
}


class MigNvml:
    """NVML as pynvml presents it, for the gpu_server's first H100 (0000:17:00.0).

    ``reset_needed``: a mode change stays pending, as on a GPU in use.
    """

    NVMLError: type[Exception] = NVMLError
    NVML_GPU_INSTANCE_PROFILE_COUNT = 14
    NVML_COMPUTE_INSTANCE_PROFILE_COUNT = 8
    NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED = 0

    def __init__(self, mode: int = 0, reset_needed: bool = True) -> None:
        self.gpu = object()
        self.current, self.pending = mode, mode
        self.reset_needed = reset_needed
        self.calls: list[tuple[Any, ...]] = []
        self.gpu_instances: list[SimpleNamespace] = []
        self.compute_instances: list[tuple[int, int]] = []  # (GPU instance id, profile id)
        self.fail_compute = False
        self.room = 2

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetHandleByPciBusId(self, bus_id: str) -> object:
        if bus_id != "0000:17:00.0":
            raise NVMLError("Not Found")
        return self.gpu

    def nvmlDeviceGetUUID(self, handle: object) -> str:
        return "GPU-17"

    def nvmlDeviceGetName(self, handle: object) -> str:
        return "NVIDIA H100 PCIe"

    def nvmlDeviceGetSerial(self, handle: object) -> str:
        raise NVMLError("Not Supported")

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(total=81559 << 20)

    def nvmlDeviceGetCudaComputeCapability(self, handle: object) -> tuple[int, int]:
        return (9, 0)

    def nvmlDeviceGetMigMode(self, handle: object) -> tuple[int, int]:
        return (self.current, self.pending)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: object) -> int:
        return 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: object, index: int) -> object:
        raise NVMLError("Not Found")

    def nvmlDeviceSetMigMode(self, handle: object, mode: int) -> int:
        self.calls.append(("nvmlDeviceSetMigMode", mode))
        self.pending = mode
        if not self.reset_needed:
            self.current = mode
        return 0

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: object, profile: int) -> Any:
        if profile not in H100_PROFILES:
            raise NVMLError("Not Supported")
        profile_id, slices, name = H100_PROFILES[profile]
        return SimpleNamespace(id=profile_id, sliceCount=slices, name=name.encode())

    def nvmlDeviceGetGpuInstanceRemainingCapacity(self, handle: object, profileId: int) -> int:
        return self.room

    def nvmlDeviceCreateGpuInstance(self, handle: object, profileId: int) -> Any:
        self.calls.append(("nvmlDeviceCreateGpuInstance", profileId))
        slices = next(s for i, s, _ in H100_PROFILES.values() if i == profileId)
        instance = SimpleNamespace(id=len(self.gpu_instances) + 1, slices=slices)
        self.gpu_instances.append(instance)
        return instance

    def nvmlGpuInstanceGetInfo(self, gpuInstance: Any) -> Any:
        return SimpleNamespace(id=gpuInstance.id)

    def nvmlGpuInstanceGetComputeInstanceProfileInfo(
        self, gpuInstance: Any, profile: int, engProfile: int
    ) -> Any:
        # Compute profiles 0..4 span 1, 2, 3, 4 and 7 slices; the larger ones only fit
        # a GPU instance that has the slices.
        slices = {0: 1, 1: 2, 2: 3, 3: 4, 4: 7}.get(profile)
        if slices is None or slices > gpuInstance.slices or engProfile != 0:
            raise NVMLError("Not Supported")
        return SimpleNamespace(id=profile, sliceCount=slices)

    def nvmlGpuInstanceCreateComputeInstance(self, gpuInstance: Any, profileId: int) -> Any:
        if self.fail_compute:
            raise NVMLError("Insufficient Resources")
        self.compute_instances.append((gpuInstance.id, profileId))
        return object()

    def nvmlGpuInstanceDestroy(self, gpuInstance: Any) -> None:
        self.calls.append(("nvmlGpuInstanceDestroy", gpuInstance.id))
        self.gpu_instances.remove(gpuInstance)

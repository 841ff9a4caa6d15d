"""MIG setup through a fake NVML (never a real GPU): modes, profiles, instances, refusals."""

from __future__ import annotations

import asyncio

import pytest

from accel.driver.discovery import Discoverer
from accel.driver.fake_sysfs import FakeSysfs
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.setup.common import Plan, Progress, SetupConfig, SetupFailed
from accel.driver.setup.mig import plan_mig_instance, plan_mig_mode
from accel.driver.setup.planner import plan_setup
from accel.errors import InvalidInput
from accel.internal.schemas import Kind
from accel.internal.setup_schemas import CreateMigInstance, SetMigMode, SetupCall
from tests.driver.setup_fakes import MigNvml

H100 = "0000:17:00.0"


def run(plan: Plan) -> Progress:
    progress = Progress()
    asyncio.run(plan.run(progress))
    return progress


def mode(enabled: bool) -> SetMigMode:
    return SetMigMode(action="mig_mode", enabled=enabled)


def instance(profile: str) -> CreateMigInstance:
    return CreateMigInstance(action="create_mig_instance", profile=profile)


def test_enabling_mig_that_needs_a_reset_says_reboot_required() -> None:
    nvml = MigNvml(mode=0, reset_needed=True)
    plan = plan_mig_mode(nvml, H100, mode(True))
    assert nvml.calls == []  # checking sets nothing
    progress = run(plan)
    assert nvml.calls == [("nvmlDeviceSetMigMode", 1)]
    assert progress.reboot_required
    assert progress.steps[0] == f"set MIG mode of {H100} to enabled"
    assert "reset the GPU" in progress.steps[1]


def test_a_mode_change_in_force_at_once_needs_no_reboot() -> None:
    nvml = MigNvml(mode=1, reset_needed=False)
    progress = run(plan_mig_mode(nvml, H100, mode(False)))
    assert nvml.calls == [("nvmlDeviceSetMigMode", 0)]
    assert (nvml.current, progress.reboot_required) == (0, False)
    assert progress.steps == [f"set MIG mode of {H100} to disabled"]


def test_the_mode_already_set_changes_nothing() -> None:
    nvml = MigNvml(mode=1)
    plan = plan_mig_mode(nvml, H100, mode(True))
    progress = run(plan)
    assert nvml.calls == [] and not plan.changes and not progress.reboot_required
    assert progress.steps == [f"MIG mode of {H100} is already enabled: nothing to change"]


def test_the_mode_already_pending_is_not_set_again_but_still_needs_a_reset() -> None:
    nvml = MigNvml(mode=0)
    nvml.pending = 1
    progress = run(plan_mig_mode(nvml, H100, mode(True)))
    assert nvml.calls == [] and progress.reboot_required


def test_a_mig_instance_is_created_from_the_profile_named_by_nvml() -> None:
    nvml = MigNvml(mode=1)
    plan = plan_mig_instance(nvml, H100, instance("3g.40gb"))
    assert plan.steps == [
        f"create a GPU instance of profile 3g.40gb (NVML profile 9) on {H100}",
        "create a compute instance spanning its 3 slice(s)",
    ]
    assert nvml.gpu_instances == []  # checking creates nothing
    progress = run(plan)
    # Profile 9 is the one NVML calls "MIG 3g.40gb"; compute profile 2 spans 3 slices.
    assert nvml.calls == [("nvmlDeviceCreateGpuInstance", 9)]
    assert nvml.compute_instances == [(1, 2)]
    assert progress.steps == [
        "create a GPU instance of profile 3g.40gb (NVML profile 9): GPU instance 1",
        "create a compute instance spanning its 3 slice(s): NVML compute profile 2",
    ]


def test_an_unknown_profile_is_refused_naming_those_offered() -> None:
    with pytest.raises(InvalidInput) as refused:
        plan_mig_instance(MigNvml(mode=1), H100, instance("2g.20gb"))
    assert refused.value.message == (
        f"{H100} offers no MIG profile 2g.20gb; it offers 1g.10gb, 1g.20gb, 3g.40gb, 7g.80gb"
    )


def test_an_instance_needs_mig_mode_in_force_and_room() -> None:
    pending = MigNvml(mode=0)
    pending.pending = 1
    with pytest.raises(InvalidInput, match=r"MIG mode is not enabled .* needs a reset"):
        plan_mig_instance(pending, H100, instance("1g.10gb"))
    full = MigNvml(mode=1)
    full.room = 0
    with pytest.raises(InvalidInput, match=r"no room left for another 1g\.10gb"):
        plan_mig_instance(full, H100, instance("1g.10gb"))


def test_a_gpu_instance_without_compute_is_destroyed_again() -> None:
    nvml = MigNvml(mode=1)
    nvml.fail_compute = True
    progress = Progress()
    with pytest.raises(SetupFailed, match="Insufficient Resources"):
        asyncio.run(plan_mig_instance(nvml, H100, instance("1g.10gb")).run(progress))
    assert nvml.calls == [("nvmlDeviceCreateGpuInstance", 19), ("nvmlGpuInstanceDestroy", 1)]
    assert nvml.gpu_instances == []
    assert progress.steps[-1] == "destroyed the new GPU instance again"


class BusyNvml(MigNvml):
    def nvmlDeviceSetMigMode(self, handle: object, mode: int) -> int:
        raise self.NVMLError("In use by another client")


def test_an_nvml_error_while_setting_fails_the_operation() -> None:
    nvml = BusyNvml(mode=0)
    with pytest.raises(SetupFailed, match=r"could not set MIG mode .* In use by another client"):
        run(plan_mig_mode(nvml, H100, mode(True)))


def call(setup: SetMigMode | CreateMigInstance, kind: Kind = Kind.GPU) -> SetupCall:
    return SetupCall.model_validate(
        {
            "operation": "6f1c1a52-3d4e-4f6a-9b0c-1d2e3f405162",
            "kind": kind,
            "address": H100,
            "setup": setup.model_dump(),
        }
    )


def test_mig_needs_nvml_on_the_node(gpu_server: FakeSysfs) -> None:
    discoverer = Discoverer(Kind.GPU, gpu_server.root, names=PciIdDatabase.empty())
    entries = discoverer.discover("node1")
    with pytest.raises(InvalidInput, match="NVML is not available to this driver"):
        plan_setup(call(mode(True)), discoverer, SetupConfig(), entries)
    with_nvml = Discoverer(Kind.GPU, gpu_server.root, names=PciIdDatabase.empty(), nvml=MigNvml())
    assert plan_setup(call(mode(True)), with_nvml, SetupConfig(), entries).steps == [
        f"set MIG mode of {H100} to enabled"
    ]


def test_mig_is_for_gpu_drivers_only(gpu_server: FakeSysfs) -> None:
    discoverer = Discoverer(Kind.FPGA, gpu_server.root, names=PciIdDatabase.empty())
    fpga = SetupCall.model_validate(
        {**call(mode(True), Kind.FPGA).model_dump(mode="json"), "address": "0000:86:00.0"}
    )
    with pytest.raises(InvalidInput, match="MIG is for NVIDIA GPUs, not FPGA hardware"):
        plan_setup(fpga, discoverer, SetupConfig(), discoverer.discover("node1"))

"""NVIDIA's management library where present (accel.driver.nvml): loaded only for a GPU
driver reading this machine's own /sys, never where it is missing or will not start,
and each query allowed to fail on its own.

``pynvml`` here is a module file written into the test's folder and imported as the
real one would be; the facts are read from tests/driver/test_trees.py's ``FakeNvml``
(an H100 with MIG on), which test_trees reads through discovery.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from accel.driver.nvml import NvidiaFacts, as_text, load_nvml, nvml_for
from accel.internal.schemas import GpuFacts, Kind
from tests.driver.test_trees import FakeNvml

H100 = "0000:18:00.0"
# A pynvml whose nvmlInit succeeds and counts its calls, or raises as NVML does where
# NVIDIA's driver is not loaded.
PYNVML = """
INITS = []
class NVMLError(Exception):
    pass
def nvmlInit():
    if {fails}:
        raise NVMLError("Driver Not Loaded")
    INITS.append(1)
"""


def install_pynvml(folder: Path, monkeypatch: pytest.MonkeyPatch, fails: bool = False) -> None:
    (folder / "pynvml.py").write_text(PYNVML.format(fails=fails))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)


def inits() -> int:
    module: Any = sys.modules.get("pynvml")
    return 0 if module is None else len(module.INITS)


def test_no_library_means_sysfs_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # as if not installed: import fails
    assert load_nvml() is None
    assert nvml_for(Kind.GPU, Path("/")) is None


def test_a_library_that_will_not_start_means_sysfs_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    install_pynvml(tmp_path, monkeypatch, fails=True)
    with caplog.at_level(logging.INFO, logger="accel.driver.nvml"):
        assert load_nvml() is None
    assert "NVML is installed but not usable here: Driver Not Loaded" in caplog.text


def test_the_library_is_started_for_a_gpu_driver_reading_this_machine_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_pynvml(tmp_path, monkeypatch)
    fake_tree = tmp_path / "sys-root"
    fake_tree.mkdir()
    assert nvml_for(Kind.GPU, fake_tree) is None  # a fake tree's GPUs are not this machine's
    assert nvml_for(Kind.QAT, Path("/")) is None
    assert nvml_for(Kind.GPU, Path("/"), wanted=False) is None
    assert inits() == 0  # none of them even loaded it
    library = nvml_for(Kind.GPU, Path("/"))
    assert library is sys.modules["pynvml"] and inits() == 1
    (tmp_path / "root").symlink_to("/")
    assert nvml_for(Kind.GPU, tmp_path / "root") is library  # this machine's /, by a link


class MigOff(FakeNvml):
    def nvmlDeviceGetMigMode(self, handle: object) -> tuple[int, int]:
        return (0, 0)


class SaysOnlyWhereItIs(FakeNvml):
    """Finds the GPU, and every query about it fails."""

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml") and name != "nvmlDeviceGetHandleByPciBusId":

            def not_supported(*args: object) -> None:
                raise FakeNvml.NVMLError(f"{name}: Not Supported")

            return not_supported
        return super().__getattribute__(name)


def read(library: FakeNvml, address: str = H100) -> GpuFacts | None:
    nvml: Any = library  # pynvml's shape, not its class (NvmlLibrary is a Protocol)
    return NvidiaFacts(nvml).facts(address)


def test_facts_read_what_the_library_says() -> None:
    facts = read(FakeNvml())
    assert facts is not None
    assert (facts.gpu_uuid, facts.name) == ("GPU-5a1f", "NVIDIA H100 80GB HBM3")
    assert (facts.memory_total_mib, facts.compute_capability) == (81559, "9.0")
    assert (facts.driver_version, facts.serial, facts.mig_mode) == ("550.54.15", None, "enabled")
    # The empty MIG slot between the two instances is skipped, not an error.
    assert [instance.uuid for instance in facts.mig_instances] == ["MIG-0", "MIG-2"]


def test_a_gpu_with_mig_off_lists_no_instances() -> None:
    facts = read(MigOff())
    assert facts is not None and (facts.mig_mode, facts.mig_instances) == ("disabled", [])


def test_each_query_fails_on_its_own() -> None:
    facts = read(SaysOnlyWhereItIs())
    assert facts is not None
    assert facts.model_dump(exclude_defaults=True) == {}
    assert read(FakeNvml(), "0000:99:00.0") is None  # a GPU NVML does not know


def test_text_comes_back_as_text_from_either_binding() -> None:
    # Older pynvml releases answer bytes, newer ones str.
    assert as_text(b"NVIDIA H200") == as_text("NVIDIA H200") == "NVIDIA H200"

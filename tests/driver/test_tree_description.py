"""A tree described from sysfs builds a tree that discovery cannot tell from the first."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from accel.driver.discovery import Discoverer
from accel.driver.fake_sysfs import build_from_description, build_gpu_server
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.tree_description import describe
from accel.internal.schemas import Kind

TREES = sorted((Path(__file__).parents[1] / "trees").glob("*.toml"))


def everything(root: Path) -> dict[str, list[dict[str, Any]]]:
    names = PciIdDatabase.empty()
    return {
        kind.value: [e.wire((1, 5)) for e in Discoverer(kind, root, names=names).discover("n1")]
        for kind in Kind
    }


def rebuilt(original: Path, tmp_path: Path) -> Path:
    description = tmp_path / "described.toml"
    description.write_text(describe(original))
    return build_from_description(description, tmp_path / "copy").root


@pytest.mark.parametrize("tree", TREES, ids=[t.stem for t in TREES])
def test_each_model_tree_survives_description(tree: Path, tmp_path: Path) -> None:
    original = build_from_description(tree, tmp_path / "original").root
    assert everything(rebuilt(original, tmp_path)) == everything(original)


def test_the_example_server_survives_description_with_its_vfs(tmp_path: Path) -> None:
    original = build_gpu_server(tmp_path / "original").root
    found = everything(original)
    assert sum(len(e.get("virtual_functions", [])) for e in found["QAT"]) == 4
    assert everything(rebuilt(original, tmp_path)) == found


def test_vfs_are_a_count_on_their_pf_and_kind_files_are_kept(tmp_path: Path) -> None:
    document = tomllib.loads(describe(build_gpu_server(tmp_path).root))
    by_address = {f["address"]: f for f in document["function"]}
    assert "0000:6b:00.1" not in by_address  # a VF, written as its PF's count
    qat = by_address["0000:6b:00.0"]
    assert qat["vfs"] == {"count": 4, "id": "4941", "first_function": 1, "driver": "vfio-pci"}
    assert qat["files"]["qat/cfg_services"] == "sym;dc"
    assert (qat["numa"], qat["driver"], qat["sriov_total_vfs"]) == (0, "4xxx", 16)


def test_run_as_a_module_it_prints_the_description(tmp_path: Path) -> None:
    root = build_gpu_server(tmp_path).root
    done = subprocess.run(
        [sys.executable, "-m", "accel.driver.tree_description", str(root)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout == describe(root)
    wrong = subprocess.run(
        [sys.executable, "-m", "accel.driver.tree_description"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert wrong.returncode == 2 and "usage" in wrong.stderr


def test_a_machine_without_an_iommu_is_described_so_and_rebuilt_without_groups(
    tmp_path: Path,
) -> None:
    original = build_from_description(TREES[0].parent / "h200-vm.toml", tmp_path / "vm").root
    text = describe(original)
    assert "iommu = false" in text.splitlines()
    [gpu] = everything(rebuilt(original, tmp_path))["GPU"]
    assert "iommu_group" not in gpu["pci"]

"""Health evidence in a fake sysfs tree, written as the kernel writes it, so tests and
benchmarks can raise a counter, drop a link, silence config space or stop a QAT
heartbeat while a driver polls the tree (docs/health.md has the files)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from accel.driver.fake_sysfs import FakeSysfs

AerFile = Literal["fatal", "nonfatal", "correctable"]
_TOTALS = {
    "fatal": "TOTAL_ERR_FATAL",
    "nonfatal": "TOTAL_ERR_NONFATAL",
    "correctable": "TOTAL_ERR_COR",
}
# A few rows of each file, as the kernel lists them (every row is printed, zero or not).
_ROWS = {
    "fatal": ("Undefined", "Data Link Protocol", "Surprise Down Error", "Poisoned TLP"),
    "nonfatal": ("Undefined", "Completion Timeout", "Unsupported Request", "Poisoned TLP"),
    "correctable": ("Receiver Error", "Bad TLP", "Bad DLLP", "Replay Timer Timeout"),
}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".new")
    staging.write_text(text)
    staging.replace(path)  # a poll never reads half a file


def set_aer(tree: FakeSysfs, address: str, which: AerFile, counts: dict[str, int]) -> None:
    """``aer_dev_<which>``: the named rows' counts (others 0) and the total line."""
    rows = {name: 0 for name in _ROWS[which]} | counts
    lines = [f"{name} {count}" for name, count in rows.items()]
    lines.append(f"{_TOTALS[which]} {sum(rows.values())}")
    _write(tree.device_dir(address) / f"aer_dev_{which}", "\n".join(lines) + "\n")


def clear_aer(tree: FakeSysfs, address: str) -> None:
    """All three AER files at zero, as after boot."""
    for which in ("fatal", "nonfatal", "correctable"):
        set_aer(tree, address, which, {})


def set_link(
    tree: FakeSysfs,
    address: str,
    width: int,
    max_width: int = 16,
    speed: str = "32.0 GT/s PCIe",
    max_speed: str = "32.0 GT/s PCIe",
) -> None:
    directory = tree.device_dir(address)
    for name, value in (
        ("current_link_width", str(width)),
        ("max_link_width", str(max_width)),
        ("current_link_speed", speed),
        ("max_link_speed", max_speed),
    ):
        _write(directory / name, value + "\n")


def set_config(tree: FakeSysfs, address: str, vendor: int | None) -> None:
    """Config space whose vendor id reads ``vendor``; None: it no longer answers (ffff)."""
    head = b"\xff" * 64 if vendor is None else vendor.to_bytes(2, "little") + bytes(62)
    path = tree.device_dir(address) / "config"
    staging = path.with_name("config.new")
    staging.write_bytes(head)
    staging.replace(path)


def set_qat_state(tree: FakeSysfs, address: str, state: str) -> None:
    _write(tree.device_dir(address) / "qat/state", state + "\n")


def set_qat_heartbeat(tree: FakeSysfs, address: str, status: int, name: str = "4xxx") -> None:
    """debugfs ``heartbeat/status``: 0 alive, -1 unresponsive."""
    _write(tree.root / f"sys/kernel/debug/qat_{name}_{address}/heartbeat/status", f"{status}\n")


def set_qat_ras(tree: FakeSysfs, address: str, which: AerFile, count: int) -> None:
    _write(tree.device_dir(address) / f"qat_ras/errors_{which}", f"{count}\n")


def set_fme_error(tree: FakeSysfs, address: str, name: str, value: int) -> None:
    """A DFL FME ``errors/<name>`` file (hex, as the kernel prints it)."""
    path = tree.device_dir(address) / f"fpga_region/region0/dfl-fme.0/errors/{name}"
    _write(path, f"{value:#x}\n")


def set_fme_alarm(tree: FakeSysfs, address: str, name: str, on: bool) -> None:
    """A DFL FME hwmon alarm, e.g. ``temp1_max_alarm``."""
    path = tree.device_dir(address) / f"fpga_region/region0/dfl-fme.0/hwmon/hwmon0/{name}"
    _write(path, f"{int(on)}\n")


def healthy(tree: FakeSysfs, address: str, vendor: int, link: bool = True) -> None:
    """Every vendor-neutral file of a function in its healthy state."""
    clear_aer(tree, address)
    set_config(tree, address, vendor)
    if link:
        set_link(tree, address, 16)

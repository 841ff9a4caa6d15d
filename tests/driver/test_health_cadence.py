"""What keeps an idle node's health polls cheap without losing what they promise: a PF
read at every poll and its VFs at every ``VF_EVERY``-th, what cannot change read once
per function, and one poll at a time per process (a hung one never stops the rest)."""

from __future__ import annotations

import threading

import pytest

from accel.driver.discovery import Discoverer
from accel.driver.fake_health import healthy, set_aer, set_link
from accel.driver.fake_sysfs import FakeSysfs
from accel.driver.health import monitor as monitor_module
from accel.driver.health.monitor import VF_EVERY, HealthMonitor, polling_turn
from accel.driver.pci_ids import PciIdDatabase
from accel.internal.schemas import HardwareEntry, Kind
from tests.driver.poll_clock import Ticks

QAT_PF = "0000:6b:00.0"
JOIN_SECONDS = 10.0  # a bound on a join, never the figure under test


def qat_entries(tree: FakeSysfs) -> list[HardwareEntry]:
    found = Discoverer(Kind.QAT, tree.root, names=PciIdDatabase.empty()).discover("node1")
    return [e for e in found if e.pci is not None and e.pci.address == QAT_PF]


def states(monitor: HealthMonitor, entries: list[HardwareEntry]) -> dict[str, str]:
    attached = monitor.attach(entries)[0]
    assert attached.health is not None
    found: dict[str, str] = {QAT_PF: attached.health.state.value}
    for vf in attached.virtual_functions:
        assert vf.health is not None
        found[vf.address] = vf.health.state.value
    return found


def test_a_pf_fails_at_the_next_poll_and_a_vf_by_its_turn(gpu_server: FakeSysfs) -> None:
    entries = qat_entries(gpu_server)
    vf = entries[0].virtual_functions[0].address
    for address in (QAT_PF, *(v.address for v in entries[0].virtual_functions)):
        healthy(gpu_server, address, 0x8086, link=address == QAT_PF)
    monitor = HealthMonitor(Kind.QAT, gpu_server.root, clock=Ticks())
    monitor.attach(entries)  # the baseline of every counter, VFs' included
    set_aer(gpu_server, vf, "fatal", {"Poisoned TLP": 1})
    set_aer(gpu_server, QAT_PF, "fatal", {"Surprise Down Error": 1})
    monitor.poll(entries)
    assert states(monitor, entries)[QAT_PF] == "failed"
    for _ in range(VF_EVERY - 2):
        monitor.poll(entries)
    assert states(monitor, entries)[vf] == "ok"  # not read since the baseline
    monitor.poll(entries)  # the VF_EVERY-th: VFs read, the error since the baseline seen
    assert states(monitor, entries)[vf] == "failed"


def checks_of(monitor: HealthMonitor, entries: list[HardwareEntry]) -> dict[str, str]:
    health = monitor.attach(entries)[0].health
    assert health is not None
    return {check.check: check.value for check in health.checks}


def test_what_cannot_change_is_read_once_per_function(gpu_server: FakeSysfs) -> None:
    entries = qat_entries(gpu_server)
    healthy(gpu_server, QAT_PF, 0x8086)  # x16 of x16
    monitor = HealthMonitor(Kind.QAT, gpu_server.root, clock=Ticks())
    monitor.poll(entries)
    # Down to x8; the maximum file changed too, which no real function's can:
    # read again, it would make x8 a full link.
    set_link(gpu_server, QAT_PF, 8, max_width=8)
    monitor.poll(entries)
    assert checks_of(monitor, entries)["link_width"] == "x8 of x16"
    monitor.poll([])  # the function vanished: what was kept of it goes with it
    monitor.poll(entries)  # back: read anew
    assert "link_width" not in checks_of(monitor, entries)


def test_one_poll_at_a_time_and_a_hung_one_holds_the_rest_only_a_while(
    gpu_server: FakeSysfs, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = qat_entries(gpu_server)
    monitor = HealthMonitor(Kind.QAT, gpu_server.root, clock=Ticks())
    done = threading.Event()

    def poll() -> None:
        monitor.poll(entries)
        done.set()

    with polling_turn() as taken:  # another driver's poll, under way
        assert taken
        threading.Thread(target=poll, daemon=True).start()
        assert not done.wait(0.2)  # this one waits for its turn
    assert done.wait(JOIN_SECONDS)  # and has it once the other's ends
    monkeypatch.setattr(monitor_module, "TURN_WAIT", 0.05)
    with polling_turn():  # a poll that does not end
        monitor.poll(entries)  # goes on without the turn once its wait ran out
        assert monitor.polls == 2

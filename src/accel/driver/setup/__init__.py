"""Setup: the actions that turn hardware into accelerators, run by the driver that owns it.

* ``sriov``: SR-IOV virtual functions through ``sriov_numvfs``, optionally bound to
  vfio-pci (any kind whose physical function has ``sriov_totalvfs``);
* ``fpga``: load a bitstream with the operator's configured tool (FPGA drivers);
* ``mig``: MIG mode and MIG instances through NVML (NVIDIA GPUs);
* ``planner``: from a ``SetupCall`` to a checked ``Plan`` (``common``);
* ``registry``: the operations a driver runs, in the background, one per device.

docs/setup.md describes the actions and their safety rules for operators.
"""

from accel.driver.setup.common import DEFAULT_SETUP_TIMEOUT, Plan, SetupConfig, SetupFailed
from accel.driver.setup.planner import plan_setup
from accel.driver.setup.registry import OperationRegistry

__all__ = [
    "DEFAULT_SETUP_TIMEOUT",
    "OperationRegistry",
    "Plan",
    "SetupConfig",
    "SetupFailed",
    "plan_setup",
]

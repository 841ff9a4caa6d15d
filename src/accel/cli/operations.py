"""``accel setup`` and ``accel operations``: turn hardware into accelerators from a shell.

``accel setup DEVICE_UUID --enable-vfs 8`` asks the public API for one setup action
and, with ``--wait``, follows the operation to its end; ``accel operations list``
and ``accel operations show UUID`` read what was asked and how it went.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from accel.cli.operator import api_options, fetch, print_table
from accel.states import OPERATION_FINAL, OperationState

OPERATION_COLUMNS = ("uuid", "node", "address", "kind", "action", "state", "reboot", "error")


def _rows(operations: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            o["uuid"],
            o["hostname"],
            o["address"],
            o["kind"],
            o["action"] + (" (dry run)" if o["dry_run"] else ""),
            o["state"],
            "yes" if o["reboot_required"] else "",
            o["error"] or "",
        ]
        for o in operations
    ]


def _action(
    enable_vfs: int | None,
    bind_vfio: bool,
    program: str | None,
    mig: str | None,
    mig_instance: str | None,
) -> dict[str, Any]:
    chosen = [
        name
        for name, value in (
            ("--enable-vfs", enable_vfs),
            ("--program", program),
            ("--mig", mig),
            ("--mig-instance", mig_instance),
        )
        if value is not None
    ]
    if len(chosen) != 1:
        raise click.UsageError(
            "name exactly one action: --enable-vfs N, --program BITSTREAM, --mig on|off "
            "or --mig-instance PROFILE"
        )
    if enable_vfs is not None:
        return {"action": "enable_vfs", "num_vfs": enable_vfs, "bind_vfio": bind_vfio}
    if program is not None:
        return {"action": "program", "bitstream": program}
    if mig is not None:
        return {"action": "mig_mode", "enabled": mig == "on"}
    return {"action": "create_mig_instance", "profile": mig_instance}


def _show(operation: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(operation, indent=2))
        return
    print_table(f"operation {operation['uuid']}", OPERATION_COLUMNS, _rows([operation]))
    for step in operation["steps"]:
        click.echo(f"  - {step}")


@click.command()
@api_options
@click.argument("device_uuid")
@click.option("--enable-vfs", type=click.IntRange(0, 4096), default=None, metavar="N")
@click.option("--bind-vfio", is_flag=True, help="With --enable-vfs: bind the VFs to vfio-pci.")
@click.option("--program", default=None, metavar="BITSTREAM", help="A file in the bitstream dir.")
@click.option("--mig", type=click.Choice(["on", "off"]), default=None)
@click.option("--mig-instance", default=None, metavar="PROFILE", help="e.g. 1g.10gb")
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
@click.option("--wait/--no-wait", default=True, help="Follow the operation to its end.")
@click.option("--wait-timeout", type=float, default=900.0, show_default=True)
def setup(
    api_url: str,
    token_file: Path | None,
    as_json: bool,
    device_uuid: str,
    enable_vfs: int | None,
    bind_vfio: bool,
    program: str | None,
    mig: str | None,
    mig_instance: str | None,
    dry_run: bool,
    wait: bool,
    wait_timeout: float,
) -> None:
    """Run one setup action on a device (admin)."""
    body = {**_action(enable_vfs, bind_vfio, program, mig, mig_instance), "dry_run": dry_run}
    path = f"/v2/devices/{device_uuid}/setup"
    operation = fetch(api_url, token_file, path, method="POST", body=body)["operation"]
    deadline = time.monotonic() + wait_timeout
    while wait and operation["state"] not in OPERATION_FINAL:
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"operation {operation['uuid']} is still {operation['state']} after "
                f"{wait_timeout:g}s; follow it with: accel operations show {operation['uuid']}"
            )
        time.sleep(0.5)
        operation = fetch(api_url, token_file, f"/v2/operations/{operation['uuid']}")["operation"]
    _show(operation, as_json)
    if operation["state"] == OperationState.FAILED:
        raise SystemExit(1)


@click.group()
def operations() -> None:
    """Setup operations: what was asked and how it went."""


@operations.command("list")
@api_options
@click.option("--state", type=click.Choice([state.value for state in OperationState]))
@click.option("--device", "device_uuid", default=None, metavar="UUID")
def operations_list(
    api_url: str,
    token_file: Path | None,
    as_json: bool,
    state: str | None,
    device_uuid: str | None,
) -> None:
    """List operations, newest first."""
    params = {"state": state, "device_uuid": device_uuid}
    chosen = {key: value for key, value in params.items() if value}
    found = fetch(api_url, token_file, "/v2/operations", chosen)["operations"]
    if as_json:
        click.echo(json.dumps(found, indent=2))
    else:
        print_table(f"{len(found)} operations", OPERATION_COLUMNS, _rows(found))


@operations.command("show")
@api_options
@click.argument("operation_uuid")
def operations_show(
    api_url: str, token_file: Path | None, as_json: bool, operation_uuid: str
) -> None:
    """One operation with its steps."""
    _show(fetch(api_url, token_file, f"/v2/operations/{operation_uuid}")["operation"], as_json)

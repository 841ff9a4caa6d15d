"""Operators' commands: what the fleet has, read from the public API, and local discovery.

Tables by default, ``--json`` for scripts. The public API's token comes from
``--token-file`` or ``ACCEL_API_TOKEN``, never from the command line itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from accel.cli.options import option
from accel.states import AlarmState
from accel.web.json_bodies import NotJson, loads

if TYPE_CHECKING:
    import httpx

Command = TypeVar("Command", bound=Callable[..., Any])


def api_options(command: Command) -> Command:
    for decorate in reversed(
        [
            option(
                "--api-url", default="http://127.0.0.1:6666", metavar="URL", help="The public API."
            ),
            option(
                "--token-file",
                type=click.Path(path_type=Path, dir_okay=False),
                default=None,
                help="File with an X-Auth-Token (else ACCEL_API_TOKEN).",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts."),
        ]
    ):
        command = decorate(command)
    return command


def fetch(
    api_url: str,
    token_file: Path | None,
    path: str,
    params: dict[str, str] | None = None,
    method: str = "GET",
    body: Any = None,
) -> Any:
    """The public API's JSON answer, or a ClickException saying what went wrong."""
    import httpx  # here, not at the top: accel discover needs no HTTP client

    token = token_file.read_text().strip() if token_file else os.environ.get("ACCEL_API_TOKEN")
    headers = {"OpenStack-API-Version": "accelerator latest"}
    if token:
        headers["X-Auth-Token"] = token
    try:
        response = httpx.request(
            method,
            api_url.rstrip("/") + path,
            params=params,
            json=body,
            headers=headers,
            timeout=10.0,
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the API at {api_url}: {exc}") from exc
    if response.status_code >= 400:
        raise click.ClickException(f"{path}: HTTP {response.status_code}: {_message(response)}")
    try:
        return loads(response.content)
    except NotJson as exc:
        raise click.ClickException(f"{path}: the API answered {exc}") from exc


def _message(response: httpx.Response) -> str:
    try:
        body = loads(response.content)
        fault = loads(body["error_message"])
        return str(fault["faultstring"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.console import Console  # here: scripts asking for --json skip rich
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # scripts and logs: never truncate ids
    console.print(table)


def readiness(entry: dict[str, Any]) -> str:
    """Ready, or why not, in an operator's words."""
    status = entry.get("acc_status") or {}
    if not entry.get("present", True):
        return "vanished"
    if status.get("setup_required"):
        return "setup required"
    if status.get("reboot_required"):
        return "reboot required"
    return "ready"


def hardware_rows(hardware: Sequence[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for entry in hardware:
        pci = entry.get("pci") or {}
        specs = entry.get("acc_specs") or {}
        rows.append(
            [
                entry.get("node"),
                specs.get("device_type"),
                pci.get("address"),
                f"{pci.get('vendor_id', '?')}:{pci.get('product_id', '?')}",
                pci.get("driver"),
                specs.get("num"),
                readiness(entry),
                health_cell(entry),
                entry.get("uuid"),
            ]
        )
    return rows


def health_cell(entry: dict[str, Any]) -> str:
    """The device's health and, unless ok, the checks behind it."""
    health = entry.get("health") or {}
    state = str(health.get("state", "unknown"))
    reason = health.get("reason")
    held = " (held in service by the brake)" if health.get("held_by_brake") else ""
    return f"{state}: {reason}{held}" if reason else state + held


HARDWARE_COLUMNS = (
    "node",
    "kind",
    "pci address",
    "vendor:device",
    "driver",
    "num",
    "state",
    "health",
    "uuid",
)


@click.group()
def agents() -> None:
    """The fleet's agents."""


@agents.command("list")
@api_options
def agents_list(api_url: str, token_file: Path | None, as_json: bool) -> None:
    """Every agent, UP or DOWN, with when it was last heard from."""
    found = fetch(api_url, token_file, "/v2/agents")["agents"]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    print_table(
        "agents",
        ("name", "endpoint", "state", "last seen", "last synced"),
        [
            [a["name"], a["endpoint"], a["state"], a["last_seen"], a["last_synced_at"]]
            for a in found
        ],
    )


@click.group()
def conductors() -> None:
    """The fleet's conductors."""


@conductors.command("list")
@api_options
def conductors_list(api_url: str, token_file: Path | None, as_json: bool) -> None:
    """Every conductor, alive or not, and the agents whose syncs it holds or ran last."""
    found = fetch(api_url, token_file, "/v2/conductors")["conductors"]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    print_table(
        "conductors",
        ("name", "endpoint", "alive", "last seen", "syncing now", "synced last"),
        [
            [
                c["name"],
                c["endpoint"],
                "yes" if c["alive"] else "NO",
                c["last_seen"],
                ", ".join(c["sync_leases"]) or "-",
                len(c["synced_agents"]),
            ]
            for c in found
        ],
    )


@click.group()
def hardware() -> None:
    """The fleet's hardware, ready or not."""


@hardware.command("list")
@api_options
@click.option(
    "--state",
    type=click.Choice(["present", "vanished", "all"]),
    default="present",
    show_default=True,
)
@click.option("--kind", default=None, help="Only this kind (GPU, FPGA, QAT, NIC, AICHIP).")
@click.option("--node", default=None, help="Only this node.")
def hardware_list(
    api_url: str,
    token_file: Path | None,
    as_json: bool,
    state: str,
    kind: str | None,
    node: str | None,
) -> None:
    """Every device the drivers reported."""
    params = {"state": state}
    if kind:
        params["type"] = kind
    if node:
        params["node"] = node
    found = fetch(api_url, token_file, "/v2/hardware", params)["hardware"]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    print_table("hardware", HARDWARE_COLUMNS, hardware_rows(found))


@hardware.command("clear-health")
@api_options
@click.argument("uuid")
def hardware_clear_health(api_url: str, token_file: Path | None, as_json: bool, uuid: str) -> None:
    """Clear a latched failure: the device's health is judged again from its last report."""
    found = fetch(api_url, token_file, f"/v2/hardware/{uuid}/clear-health", method="POST")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(f"{uuid}: {health_cell(found)}")


@hardware.command("confirm-failures")
@api_options
def hardware_confirm_failures(api_url: str, token_file: Path | None, as_json: bool) -> None:
    """Release the fleet health brake: the devices it kept in service go out of it."""
    found = fetch(api_url, token_file, "/v2/hardware/confirm-failures", method="POST")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(f"{found['taken_out_of_service']} device(s) taken out of service; brake released")


@click.group()
def alarms() -> None:
    """Alarms: agents that went silent, hardware that vanished."""


@alarms.command("list")
@api_options
@click.option(
    "--state",
    type=click.Choice([*(state.value for state in AlarmState), "all"]),
    default=AlarmState.ACTIVE.value,
    show_default=True,
)
def alarms_list(api_url: str, token_file: Path | None, as_json: bool, state: str) -> None:
    """Active alarms (or cleared, or all)."""
    found = fetch(api_url, token_file, "/v2/alarms", {"state": state})["alarms"]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    print_table(
        "alarms",
        ("kind", "subject", "state", "raised", "cleared", "message"),
        [
            [a["kind"], a["subject"], a["state"], a["raised_at"], a["cleared_at"], a["message"]]
            for a in found
        ],
    )


@click.group()
def placement() -> None:
    """What the conductors report to OpenStack Placement."""


@placement.command("status")
@api_options
@click.option("--node", default=None, help="Only this node.")
def placement_status(
    api_url: str, token_file: Path | None, as_json: bool, node: str | None
) -> None:
    """Per node: what was reported and when, whether a report is pending, the last error."""
    found = fetch(api_url, token_file, "/v2/placement/status", {"node": node} if node else None)
    nodes = found["nodes"]
    if as_json:
        click.echo(json.dumps(nodes, indent=2))
        return
    print_table(
        "placement",
        ("node", "providers", "reported", "pending", "next try", "last error"),
        [
            [
                n["node"],
                n["providers"],
                n["reported_at"] or "never",
                "yes" if n["pending"] else "no",
                n["next_try_at"] or "-",
                n["last_error"] or "-",
            ]
            for n in nodes
        ],
    )

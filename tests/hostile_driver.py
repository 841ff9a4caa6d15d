"""A driver that lies, for the hostile tests: ``python -m tests.hostile_driver``.

It registers with an agent as a real driver does, then answers every discovery with
the report it was told to build: a number of entries of its kind, each with a
product name of a given length. Real drivers cannot be made to do this (their
reports come from sysfs), and a fake tree of 100,000 devices would take minutes to
write, so this one makes its report up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from accel.errors import PeerError
from accel.internal.client import InternalClient
from accel.internal.schemas import DriverHello, Kind
from accel.internal.server import internal_app
from accel.internal.versions import VersionRange
from accel.serving import serve
from accel.sockets import bind, endpoint_of


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep (``{"a": {"a": ... {}}}``)."""
    document: dict[str, Any] = {}
    for _ in range(depth - 1):
        document = {"a": document}
    return document


def made_up_report(
    kind: Kind,
    entries: int,
    name_length: int,
    vendor_id: str = "10de",
    mdev_instances: int = 0,
    same_address: bool = False,
    capability_depth: int = 0,
    product_name: str | None = None,
) -> bytes:
    capability = nested(capability_depth) if capability_depth else {}
    hardware: list[dict[str, Any]] = [
        {
            "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"hostile/{kind.value}/{index}")),
            "acc_specs": {
                "remote": 0,
                "num": 1,
                "device_type": kind.value,
                "acc_capability": capability,
            },
            "acc_status": {"setup_required": False, "reboot_required": False},
            "pci": {
                "address": "0000:17:00.0"
                if same_address
                else f"{index // 65536:04x}:{index // 256 % 256:02x}:"
                f"{index // 8 % 32:02x}.{index % 8}",
                "vendor_id": vendor_id,
                "product_id": "2331",
                "class_code": "030200",
                "product_name": product_name or "p" * name_length,
            },
        }
        for index in range(entries)
    ]
    if mdev_instances:
        for entry in hardware:
            entry["mdev_types"] = [{"type_id": "nvidia-1", "available_instances": mdev_instances}]
    return json.dumps({"hardware": hardware, "generation": 1}).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agent", required=True)
    parser.add_argument("--kind", type=Kind.parse, default=Kind.GPU)
    parser.add_argument("--entries", type=int, default=1)
    parser.add_argument("--name-length", type=int, default=8)
    # A command line cannot carry a NUL: written here as the two characters \\0.
    parser.add_argument("--vendor-id", default="10de", type=lambda v: v.replace("\\0", "\0"))
    parser.add_argument("--mdev-instances", type=int, default=0)
    parser.add_argument("--same-address", action="store_true")
    parser.add_argument("--capability-depth", type=int, default=0)
    # A report a test rewrites while the stack runs (health that changes), read anew
    # for every answer instead of a made-up one.
    parser.add_argument("--report-file", default=None)
    # Any text, markup included: a name is input from the fleet.
    parser.add_argument("--product-name")
    args = parser.parse_args()
    token = os.environ["ACCEL_INTERNAL_TOKEN"]
    body = made_up_report(
        args.kind,
        args.entries,
        args.name_length,
        args.vendor_id,
        args.mdev_instances,
        args.same_address,
        args.capability_depth,
        args.product_name,
    )
    sock = bind("127.0.0.1:0")
    endpoint = endpoint_of(sock)

    async def report(request: Request) -> Response:
        if args.report_file is not None:
            written = await asyncio.to_thread(Path(args.report_file).read_bytes)
            return Response(written, media_type="application/json")
        return Response(body, media_type="application/json")

    async def hello_forever() -> None:
        client = InternalClient(token, VersionRange())
        hello = DriverHello(status="READY", endpoint=endpoint, type=args.kind)
        try:
            while True:
                with suppress(PeerError):
                    await client.driver_hello(args.agent, hello)
                await asyncio.sleep(0.5)
        finally:
            await client.aclose()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(hello_forever())
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    routes = [
        Route("/v1/discovery", report, methods=["POST"]),
        Route("/v1/hardware", report, methods=["GET"]),
    ]
    serve(internal_app("driver", routes, token, VersionRange(), lifespan), sock)


if __name__ == "__main__":
    main()

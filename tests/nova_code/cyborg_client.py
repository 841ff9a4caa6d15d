"""Run by Nova 34's own Python (scripts/ensure-nova-client's venv), never by accel's:
drives Nova's real Cyborg client (``nova.accelerator.cyborg``) against accel's api as
nova-conductor and nova-compute do, and prints what happened as one JSON document.

stdin: {"conf": nova.conf path, "user_token", "project", "profile", "rg_rp_map",
"hostname", "instance"}. Each step's outcome is recorded, an exception as its text.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.nova_code.nova_start import start_nova
else:  # run as a script by Nova's Python, its folder first on sys.path
    from nova_start import start_nova


def attempt(results: dict[str, Any], step: str, call: Callable[[], Any]) -> Any:
    try:
        results[step] = call()
    except Exception as exc:  # Nova's own exceptions, reported to the test
        results[step] = {"error": type(exc).__name__, "message": str(exc)}
        return None
    return results[step]


def main() -> None:
    plan = json.load(sys.stdin)
    from nova import objects
    from nova.accelerator import cyborg

    ctx = start_nova(plan)
    client = cyborg.get_client(ctx)
    results: dict[str, Any] = {}

    def groups() -> list[dict[str, Any]]:
        found = cyborg.get_device_profile_request_groups(ctx, plan["profile"])
        return [
            {
                "requester_id": group.requester_id,
                "resources": group.resources,
                "required_traits": sorted(group.required_traits),
            }
            for group in found
        ]

    attempt(results, "request_groups", groups)
    arqs = attempt(
        results,
        "created",
        lambda: client.create_arqs_and_match_resource_providers(plan["profile"], plan["rg_rp_map"]),
    )
    bindings = {
        arq["uuid"]: {
            "hostname": plan["hostname"],
            "device_rp_uuid": arq["device_rp_uuid"],
            "instance_uuid": plan["instance"],
        }
        for arq in arqs or []
    }
    attempt(results, "bind", lambda: client.bind_arqs(bindings) or "done")
    attempt(
        results,
        "resolved",
        lambda: client.get_arqs_for_instance(plan["instance"], only_resolved=True),
    )
    if arqs:
        attempt(results, "by_uuid", lambda: client.get_arq_by_uuid(arqs[0]["uuid"]))
    instance = objects.Instance(uuid=plan["instance"])
    attempt(results, "uuids", lambda: sorted(client.get_arq_uuids_for_instance(instance)))
    attempt(results, "delete", lambda: client.delete_arqs_for_instance(plan["instance"]) or "done")
    attempt(results, "after_delete", lambda: client.get_arqs_for_instance(plan["instance"]))
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()

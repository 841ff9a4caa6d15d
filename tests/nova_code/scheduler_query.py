"""Run by Nova 34's own Python (scripts/ensure-nova-client's venv), never by accel's:
what Nova's scheduler asks Placement for when a flavor says ``accel:device_profile``.

As nova-api does at boot, the profile's request groups come from accel through Nova's
Cyborg client; the scheduler's accelerators filter and ``ResourceRequest`` then build
the query that its report client sends as ``GET /allocation_candidates`` (at
placement 1.36). With a Placement URL in the plan, the report client really sends it
and the candidates come back. Prints one JSON document.

stdin: {"conf", "user_token", "project", "profile", "vcpus", "memory_mb", "disk_gb",
"placement": whether to send the query (nova.conf then says where Placement is),
"also": more profiles whose query is only built (one Nova start for all)}.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.nova_code.nova_start import start_nova
else:  # run as a script by Nova's Python, its folder first on sys.path
    from nova_start import start_nova


def main() -> None:
    plan = json.load(sys.stdin)
    from nova import objects
    from nova.accelerator import cyborg
    from nova.scheduler import request_filter
    from nova.scheduler import utils as scheduler_utils
    from nova.scheduler.client import report

    ctx = start_nova(plan)

    def request_for(profile: str) -> Any:
        flavor = objects.Flavor(
            name="accel-test",
            vcpus=plan["vcpus"],
            memory_mb=plan["memory_mb"],
            root_gb=plan["disk_gb"],
            ephemeral_gb=0,
            swap=0,
            extra_specs={"accel:device_profile": profile},
        )
        spec = objects.RequestSpec(
            flavor=flavor,
            image=objects.ImageMeta.from_dict({"properties": {}}),
            is_bfv=False,
            num_instances=1,
            requested_resources=cyborg.get_device_profile_request_groups(ctx, profile),
        )
        request_filter.accelerators_filter(ctx, spec)
        return scheduler_utils.resources_from_request_spec(ctx, spec, None)

    resources = request_for(plan["profile"])
    result: dict[str, Any] = {
        "querystring": resources.to_querystring(),
        "also": {name: request_for(name).to_querystring() for name in plan.get("also", [])},
    }
    if plan.get("placement"):
        client = report.SchedulerReportClient()
        candidates, _, version = client.get_allocation_candidates(ctx, resources)
        result["version"] = version
        result["allocation_requests"] = candidates
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()

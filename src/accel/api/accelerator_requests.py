"""``/v2/accelerator_requests``: ARQs, created from a device profile, bound by Nova.

Creating makes one ARQ per requested unit of each group. Binding and unbinding are
RFC 6902 patches that a conductor carries out (it owns allocation); the api checks
them, and who may touch which ARQ: a caller without the admin role sees only its
own project's ARQs, and others' are 404, not 403.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session, selectinload
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.api import conductor_link
from accel.api.auth import RequestContext
from accel.api.devices import timestamp
from accel.api.openstack import link
from accel.api.patches import bindings_from_patch
from accel.api.policy import authorize
from accel.api.queries import one_by_uuid, only_params, reader, valid_uuid, writer
from accel.api.routing import resource
from accel.db.models import AcceleratorRequest, DeviceProfile
from accel.errors import Conflict, InvalidInput, Locked, NotFound
from accel.internal.schemas import ArqChanges
from accel.internal.server import read_json

RESOLVED = ("Bound", "BindFailed", "Deleting")
# Requests with no accelerator: the api deletes them without asking a conductor.
HOLDING_NOTHING = ("Initial", "Unbound")
MAX_ARQS_PER_PROFILE = 1000


def arq_body(request: Request, arq: AcceleratorRequest) -> dict[str, Any]:
    handle = arq.attach_handle if arq.state == "Bound" else None
    body: dict[str, Any] = {
        "uuid": arq.uuid,
        "state": arq.state,
        "device_profile_name": arq.device_profile.name,
        "device_profile_group_id": arq.device_profile_group_id,
        "hostname": arq.hostname,
        "device_rp_uuid": arq.device_rp_uuid,
        "instance_uuid": arq.instance_uuid,
        "project_id": arq.project_id,
        "attach_handle_type": handle.attach_type if handle else "",
        "attach_handle_uuid": handle.uuid if handle else None,
        "attach_handle_info": json.loads(handle.attach_info) if handle else {},
        "created_at": timestamp(arq.created_at),
        "updated_at": timestamp(arq.updated_at),
        "links": link(request, "accelerator_requests", arq.uuid),
    }
    if arq.state == "BindFailed" and arq.bind_failure:
        body["bind_failure_reason"] = arq.bind_failure  # accel's addition: why
    return body


def visible(caller: RequestContext) -> Select[AcceleratorRequest]:
    statement = (
        select(AcceleratorRequest)
        .options(
            selectinload(AcceleratorRequest.device_profile),
            selectinload(AcceleratorRequest.attach_handle),
        )
        .order_by(AcceleratorRequest.id)
    )
    if not caller.is_admin:
        statement = statement.where(AcceleratorRequest.project_id == caller.identity.project_id)
    return statement


def units_per_group(groups: list[dict[str, str]]) -> list[int]:
    """How many ARQs each group asks for, counted as Cyborg counts them."""
    counts = []
    for group in groups:
        count = sum(int(v) for k, v in group.items() if k.startswith("resources:"))
        if group.get("trait:CUSTOM_FPGA_XILINX") == "required":
            count *= 2  # an Alveo is its management and its user function
        counts.append(count)
    return counts


async def create_arqs(request: Request) -> Response:
    caller = authorize(request, "cyborg:arq:create")
    only_params(request, ())
    body = await read_json(request)
    if (
        not isinstance(body, dict)
        or set(body) != {"device_profile_name"}
        or not isinstance(body["device_profile_name"], str)
    ):
        raise InvalidInput('an accelerator request is {"device_profile_name": "<name>"}')
    name = body["device_profile_name"]

    def store(session: Session) -> list[AcceleratorRequest]:
        profile = session.scalar(select(DeviceProfile).where(DeviceProfile.name == name))
        if profile is None:
            raise NotFound(f"Device profile not found with name={name}")
        counts = units_per_group(json.loads(profile.profile_json)["groups"])
        if sum(counts) > MAX_ARQS_PER_PROFILE:
            raise InvalidInput(
                f"device profile {name} asks for more than {MAX_ARQS_PER_PROFILE} accelerators"
            )
        created = [
            AcceleratorRequest(
                project_id=caller.identity.project_id,
                state="Initial",
                device_profile=profile,
                device_profile_group_id=index,
            )
            for index, count in enumerate(counts)
            for _ in range(count)
        ]
        session.add_all(created)
        session.flush()
        return created

    created = await writer(request).run(store)
    return JSONResponse({"arqs": [arq_body(request, arq) for arq in created]}, status_code=201)


async def list_arqs(request: Request) -> Response:
    caller = authorize(request, "cyborg:arq:get_all")
    params = only_params(request, ("instance", "bind_state"))
    if "bind_state" in params and params["bind_state"] != "resolved":
        raise InvalidInput("bind_state may only be resolved")
    statement = visible(caller)
    if "instance" in params:
        statement = statement.where(AcceleratorRequest.instance_uuid == params["instance"])

    def query(session: Session) -> list[AcceleratorRequest]:
        return list(session.scalars(statement))

    arqs = await reader(request).run(query)
    if "bind_state" in params:
        if "instance" in params and any(arq.state not in RESOLVED for arq in arqs):
            raise Locked(f"accelerator requests of instance {params['instance']} are still binding")
        arqs = [arq for arq in arqs if arq.state in RESOLVED]
    return JSONResponse({"arqs": [arq_body(request, arq) for arq in arqs]})


async def get_arq(request: Request) -> Response:
    caller = authorize(request, "cyborg:arq:get_one")
    arq = await one_by_uuid(
        request,
        "Accelerator request",
        lambda uuid: visible(caller).where(AcceleratorRequest.uuid == uuid),
    )
    return JSONResponse(arq_body(request, arq))


async def patch_arqs(request: Request) -> Response:
    caller = authorize(request, "cyborg:arq:update")
    only_params(request, ())
    changes = bindings_from_patch(request, caller, await read_json(request))
    uuids = {str(b.arq_uuid) for b in changes.bind} | set(map(str, changes.unbind))
    instances = {str(b.instance_uuid) for b in changes.bind}

    def check(session: Session) -> None:
        found = set(
            session.scalars(
                visible(caller)
                .with_only_columns(AcceleratorRequest.uuid)
                .where(AcceleratorRequest.uuid.in_(uuids))
            )
        )
        missing = sorted(uuids - found)
        if missing:
            raise NotFound(f"Accelerator request not found with uuid={missing[0]}")
        taken = session.scalar(
            visible(caller)
            .with_only_columns(AcceleratorRequest.uuid)
            .where(
                AcceleratorRequest.instance_uuid.in_(instances),
                AcceleratorRequest.uuid.not_in(uuids),
            )
            .limit(1)
        )
        if taken is not None:
            raise InvalidInput(
                f"the instance already has accelerator request {taken} bound; "
                "adding more to a bound instance is not supported"
            )

    await reader(request).run(check)
    refused = [o for o in await conductor_link.change_arqs(request, changes) if o.refused]
    if refused:
        raise Conflict("; ".join(f"{o.uuid}: {o.reason}" for o in refused))
    return Response(status_code=202)


async def delete_arqs(request: Request) -> Response:
    caller = authorize(request, "cyborg:arq:delete")
    path_uuid = request.path_params.get("uuid")
    params = only_params(request, ("arqs", "instance"))
    if path_uuid is not None:
        params = {"arqs": path_uuid}
    if ("arqs" in params) == ("instance" in params):
        raise InvalidInput(
            "delete accelerator requests by ?arqs=uuid,... or by ?instance=uuid,"
            " not both and not neither"
        )
    if "arqs" in params:
        wanted = [valid_uuid(u, "accelerator request uuid") for u in params["arqs"].split(",") if u]
        statement = visible(caller).where(AcceleratorRequest.uuid.in_(wanted))
    else:
        wanted = []
        statement = visible(caller).where(AcceleratorRequest.instance_uuid == params["instance"])

    def delete_unbound(session: Session) -> tuple[list[str], list[str]]:
        """Deletes the requests that hold nothing; the found ones, and those deleted."""
        found = list(session.scalars(statement.with_only_columns(AcceleratorRequest.uuid)))
        if not found:
            return found, []
        # The state test is repeated in the DELETE: a bind the conductor starts
        # meanwhile takes the row first (Initial -> BindStarted) and is left to it.
        deleted = session.scalars(
            delete(AcceleratorRequest)
            .where(
                AcceleratorRequest.uuid.in_(found),
                AcceleratorRequest.state.in_(HOLDING_NOTHING),
                AcceleratorRequest.attach_handle_id.is_(None),
            )
            .returning(AcceleratorRequest.uuid)
            .execution_options(synchronize_session=False)
        ).all()
        return found, list(deleted)

    found, deleted = await writer(request).run(delete_unbound)
    # A request bound or binding has an accelerator to free: the conductor unbinds it.
    bound = [uuid for uuid in found if uuid not in set(deleted)]
    if bound:
        await conductor_link.change_arqs(request, ArqChanges.model_validate({"delete": bound}))
    missing = sorted(set(wanted) - set(found))
    if missing:  # the others are gone; as in Cyborg, the missing ones are reported after
        raise NotFound(f"Accelerator request not found with uuid={missing[0]}")
    return Response(status_code=204)


routes = [
    resource(
        "/v2/accelerator_requests",
        get=list_arqs,
        post=create_arqs,
        patch=patch_arqs,
        delete=delete_arqs,
    ),
    # openstacksdk sends its {uuid: ops} patch to the request's own path.
    resource("/v2/accelerator_requests/{uuid}", get=get_arq, patch=patch_arqs, delete=delete_arqs),
]

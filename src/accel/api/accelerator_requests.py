"""``/v2/accelerator_requests``: ARQs, created from a device profile, bound by Nova.

Creating makes one ARQ per requested unit of each group. Binding and unbinding are
RFC 6902 patches that a conductor carries out (it owns allocation); the api checks
them, and who may touch which ARQ: a caller without the admin role sees only its
own project's ARQs, and others' are 404, not 403. Binding, unbinding and deleting a
bound ARQ are Nova's (its service token, accel.api.policy).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from sqlalchemy import ColumnElement, Connection, Select, bindparam, delete, insert, select
from sqlalchemy.sql.dml import ReturningDelete
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.api import conductor_link
from accel.api.auth import RequestContext
from accel.api.devices import timestamp
from accel.api.openstack import link
from accel.api.patches import bindings_from_patch
from accel.api.policy import authorize
from accel.api.queries import reader, uuid_list, valid_uuid, writer
from accel.api.routing import resource
from accel.db.columns import new_uuid, utcnow
from accel.db.models import AcceleratorRequest, AttachHandle, DeviceProfile
from accel.errors import Conflict, InvalidInput, Locked, NotFound
from accel.internal.arq_schemas import MAX_ARQS_PER_CHANGE, ArqChanges
from accel.states import ARQ_HOLDING_NOTHING, ARQ_RESOLVED, ArqState
from accel.web.bodies import read_json
from accel.web.queries import only_params

MAX_ARQS_PER_PROFILE = 1000


@dataclass(frozen=True, slots=True)
class ArqView:
    """One ARQ as the API shows it: its row, its profile's name, its handle if any.

    ARQs are read and written with Core statements, not ORM objects: a create and
    delete pair skips the unit of work's bookkeeping, and no cached read shows ARQs."""

    uuid: str
    state: ArqState
    device_profile_name: str
    device_profile_group_id: int
    project_id: str | None
    created_at: dt.datetime
    hostname: str | None = None
    device_rp_uuid: str | None = None
    instance_uuid: str | None = None
    bind_failure: str | None = None
    updated_at: dt.datetime | None = None
    handle_type: str | None = None
    handle_uuid: str | None = None
    handle_info: str | None = None


ARQ_VIEW = (
    select(
        AcceleratorRequest.uuid,
        AcceleratorRequest.state,
        DeviceProfile.name.label("device_profile_name"),
        AcceleratorRequest.device_profile_group_id,
        AcceleratorRequest.project_id,
        AcceleratorRequest.created_at,
        AcceleratorRequest.hostname,
        AcceleratorRequest.device_rp_uuid,
        AcceleratorRequest.instance_uuid,
        AcceleratorRequest.bind_failure,
        AcceleratorRequest.updated_at,
        AttachHandle.attach_type.label("handle_type"),
        AttachHandle.uuid.label("handle_uuid"),
        AttachHandle.attach_info.label("handle_info"),
    )
    .join_from(
        AcceleratorRequest, DeviceProfile, AcceleratorRequest.device_profile_id == DeviceProfile.id
    )
    .outerjoin(AttachHandle, AcceleratorRequest.attach_handle_id == AttachHandle.id)
    .order_by(AcceleratorRequest.id)
)


def arq_body(request: Request, arq: ArqView) -> dict[str, Any]:
    bound = arq.state == ArqState.BOUND and arq.handle_uuid is not None
    body: dict[str, Any] = {
        "uuid": arq.uuid,
        "state": arq.state,
        "device_profile_name": arq.device_profile_name,
        "device_profile_group_id": arq.device_profile_group_id,
        "hostname": arq.hostname,
        "device_rp_uuid": arq.device_rp_uuid,
        "instance_uuid": arq.instance_uuid,
        "project_id": arq.project_id,
        "attach_handle_type": arq.handle_type if bound else "",
        "attach_handle_uuid": arq.handle_uuid if bound else None,
        "attach_handle_info": json.loads(arq.handle_info) if bound and arq.handle_info else {},
        "created_at": timestamp(arq.created_at),
        "updated_at": timestamp(arq.updated_at),
        "links": link(request, "accelerator_requests", arq.uuid),
    }
    if arq.state == ArqState.BIND_FAILED and arq.bind_failure:
        body["bind_failure_reason"] = arq.bind_failure  # accel's addition: why
    return body


# The statements are built once, with bound parameters: building and keying a
# statement per request cost as much as running it. Requests are chosen by uuid, by a
# list of uuids, or by instance; callers without the admin role see their project's.
CHOSEN = {
    "uuid": AcceleratorRequest.uuid == bindparam("uuid"),
    "uuids": AcceleratorRequest.uuid.in_(bindparam("uuids", expanding=True)),
    "instance": AcceleratorRequest.instance_uuid == bindparam("instance"),
}
Chosen = Literal["uuid", "uuids", "instance"]
IN_PROJECT = AcceleratorRequest.project_id == bindparam("project")


def _where(caller_is_admin: bool, chosen: Chosen | None) -> list[ColumnElement[bool]]:
    return [
        *([CHOSEN[chosen]] if chosen is not None else []),
        *([] if caller_is_admin else [IN_PROJECT]),
    ]


@cache
def view_statement(caller_is_admin: bool, chosen: Chosen | None) -> Select[*tuple[Any, ...]]:
    return ARQ_VIEW.where(*_where(caller_is_admin, chosen))


@cache
def uuids_statement(caller_is_admin: bool, chosen: Chosen) -> Select[str]:
    return select(AcceleratorRequest.uuid).where(*_where(caller_is_admin, chosen))


@cache
def delete_statement(caller_is_admin: bool, chosen: Chosen) -> ReturningDelete[str]:
    # The state test is in the DELETE itself: a bind the conductor commits meanwhile
    # makes the row Bound first, and it is left to the conductor to unbind.
    return (
        delete(AcceleratorRequest)
        .where(
            *_where(caller_is_admin, chosen),
            AcceleratorRequest.state.in_(ARQ_HOLDING_NOTHING),
            AcceleratorRequest.attach_handle_id.is_(None),
        )
        .returning(AcceleratorRequest.uuid)
    )


PROFILE_BY_NAME = select(DeviceProfile.id, DeviceProfile.profile_json).where(
    DeviceProfile.name == bindparam("name")
)
INSERT_ARQS = insert(AcceleratorRequest)


def read_views(
    connection: Connection, caller: RequestContext, chosen: Chosen | None, **values: object
) -> list[ArqView]:
    statement = view_statement(caller.is_admin, chosen)
    values["project"] = caller.identity.project_id
    return [ArqView(**row._mapping) for row in connection.execute(statement, values)]


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
    project = caller.identity.project_id

    def store(connection: Connection) -> list[ArqView]:
        profile = connection.execute(PROFILE_BY_NAME, {"name": name}).first()
        if profile is None:
            raise NotFound(f"Device profile not found with name={name}")
        counts = units_per_group(json.loads(profile.profile_json)["groups"])
        if sum(counts) > MAX_ARQS_PER_PROFILE:
            raise InvalidInput(
                f"device profile {name} asks for more than {MAX_ARQS_PER_PROFILE} accelerators"
            )
        now = utcnow()
        created = [
            ArqView(new_uuid(), ArqState.INITIAL, name, index, project, now)
            for index, count in enumerate(counts)
            for _ in range(count)
        ]
        if created:
            connection.execute(
                INSERT_ARQS,
                [
                    {
                        "uuid": arq.uuid,
                        "project_id": project,
                        "state": arq.state,
                        "device_profile_id": profile.id,
                        "device_profile_group_id": arq.device_profile_group_id,
                        "created_at": now,
                    }
                    for arq in created
                ],
            )
        return created

    created = await writer(request).run_sql(store)
    return JSONResponse({"arqs": [arq_body(request, arq) for arq in created]}, status_code=201)


async def list_arqs(request: Request) -> Response:
    caller = authorize(request, "cyborg:arq:get_all")
    params = only_params(request, ("instance", "bind_state"))
    if "bind_state" in params and params["bind_state"] != "resolved":
        raise InvalidInput("bind_state may only be resolved")
    instance = params.get("instance")
    if instance is not None:
        instance = valid_uuid(instance, "instance uuid")

    def query(connection: Connection) -> list[ArqView]:
        if instance is None:
            return read_views(connection, caller, None)
        return read_views(connection, caller, "instance", instance=instance)

    arqs = await reader(request).run_sql(query)
    if "bind_state" in params:
        if "instance" in params and any(arq.state not in ARQ_RESOLVED for arq in arqs):
            raise Locked(f"accelerator requests of instance {params['instance']} are still binding")
        arqs = [arq for arq in arqs if arq.state in ARQ_RESOLVED]
    return JSONResponse({"arqs": [arq_body(request, arq) for arq in arqs]})


async def get_arq(request: Request) -> Response:
    caller = authorize(request, "cyborg:arq:get_one")
    only_params(request, ())
    uuid = valid_uuid(request.path_params["uuid"], "accelerator request uuid")
    found = await reader(request).run_sql(
        lambda connection: read_views(connection, caller, "uuid", uuid=uuid)
    )
    if not found:
        raise NotFound(f"Accelerator request not found with uuid={uuid}")
    return JSONResponse(arq_body(request, found[0]))


async def patch_arqs(request: Request) -> Response:
    caller = authorize(request, "cyborg:arq:update")
    only_params(request, ())
    changes = bindings_from_patch(request, caller, await read_json(request))
    if changes.bind:
        authorize(request, "cyborg:arq:bind")
    if changes.unbind:
        authorize(request, "cyborg:arq:unbind")
    uuids = {str(b.arq_uuid) for b in changes.bind} | set(map(str, changes.unbind))
    instances = {str(b.instance_uuid) for b in changes.bind}

    project = caller.identity.project_id

    def check(connection: Connection) -> None:
        chosen = uuids_statement(caller.is_admin, "uuids")
        found = set(connection.scalars(chosen, {"uuids": list(uuids), "project": project}))
        missing = sorted(uuids - found)
        if missing:
            raise NotFound(f"Accelerator request not found with uuid={missing[0]}")
        taken = connection.scalar(
            select(AcceleratorRequest.uuid)
            .where(
                *_where(caller.is_admin, None),
                AcceleratorRequest.instance_uuid.in_(instances),
                AcceleratorRequest.uuid.not_in(uuids),
            )
            .limit(1),
            {"project": project},
        )
        if taken is not None:
            raise InvalidInput(
                f"the instance already has accelerator request {taken} bound; "
                "adding more to a bound instance is not supported"
            )

    await reader(request).run_sql(check)
    refused = [o for o in await conductor_link.change_arqs(request, changes) if o.refused]
    if refused:
        raise Conflict("; ".join(f"{o.uuid}: {o.reason}" for o in refused))
    return Response(status_code=202)


class _Held(Exception):
    """Some chosen requests hold an accelerator: the deletion is rolled back, and a
    conductor, which alone frees accelerators, deletes them all."""

    def __init__(self, uuids: list[str]) -> None:
        super().__init__(f"{len(uuids)} accelerator requests to delete through a conductor")
        self.uuids = uuids


async def delete_arqs(request: Request) -> Response:
    """All or nothing: a request missing (or another project's) deletes none."""
    caller = authorize(request, "cyborg:arq:delete")
    path_uuid = request.path_params.get("uuid")
    if path_uuid is not None:
        only_params(request, ())
        params = {"arqs": path_uuid}
    else:
        params = only_params(request, ("arqs", "instance"))
    if ("arqs" in params) == ("instance" in params):
        raise InvalidInput(
            "delete accelerator requests by ?arqs=uuid,... or by ?instance=uuid,"
            " not both and not neither"
        )
    chosen: Chosen
    values: dict[str, object]
    if "arqs" in params:
        wanted = set(uuid_list(params["arqs"], "accelerator request uuid"))
        chosen, values = "uuids", {"uuids": sorted(wanted)}
    else:
        wanted = set()
        chosen, values = "instance", {"instance": valid_uuid(params["instance"], "instance uuid")}
    values["project"] = caller.identity.project_id

    def delete_all_free(connection: Connection) -> None:
        """Deletes the chosen requests if every one is there and holds nothing; raises
        (rolling the deletion back) otherwise."""
        deleted = set(connection.scalars(delete_statement(caller.is_admin, chosen), values))
        if wanted and deleted == wanted:
            return  # the usual case, in one statement
        held = list(connection.scalars(uuids_statement(caller.is_admin, chosen), values))
        missing = sorted(wanted - deleted - set(held))
        if missing:
            raise NotFound(f"Accelerator request not found with uuid={missing[0]}")
        if held:
            raise _Held(sorted(deleted | set(held)))

    try:
        await writer(request).run_sql(delete_all_free)
    except _Held as some_held:
        authorize(request, "cyborg:arq:delete_bound")
        await _delete_through_conductor(request, some_held.uuids)
    return Response(status_code=204)


async def _delete_through_conductor(request: Request, uuids: list[str]) -> None:
    """A conductor unbinds and deletes them; nothing is deleted here first, so a
    conductor that cannot be reached leaves every request as it was (503)."""
    for start in range(0, len(uuids), MAX_ARQS_PER_CHANGE):
        chunk = uuids[start : start + MAX_ARQS_PER_CHANGE]
        # A request deleted meanwhile is "not found" there: it is gone, as asked.
        await conductor_link.change_arqs(request, ArqChanges.model_validate({"delete": chunk}))


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

"""Reading Nova's JSON patch of ``PATCH /v2/accelerator_requests`` (accel.api.patches):
per request all ``add`` ops make a bind, all ``remove`` ops an unbind, and anything
else is refused whole, naming the request and what is wrong with it.

tests/api/test_cyborg_resources.py sends bad patches through the api for their
statuses; these read what a patch becomes, which only a conductor would see.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from starlette.requests import Request

from accel.api.auth import Identity, RequestContext, Role
from accel.api.microversions import ApiFeature
from accel.api.patches import MAX_ARQS_PER_PATCH, bindings_from_patch
from accel.errors import Forbidden, InvalidInput, VersionNotAcceptable
from accel.internal.arq_schemas import ArqBinding, ArqChanges

ARQ, OTHER = "3c9e7a2b-5d41-4f0e-9a6b-1c2d3e4f5a6b", "8d7c6b5a-4e3f-4a2b-9c1d-0e9f8a7b6c5d"
RP, INSTANCE = "a5b4c3d2-e1f0-4a1b-8c2d-3e4f5a6b7c8d", "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
BIND = [
    {"op": "add", "path": "/hostname", "value": "compute1"},
    {"op": "add", "path": "/device_rp_uuid", "value": RP},
    {"op": "add", "path": "/instance_uuid", "value": INSTANCE},
]
UNBIND = [{"op": "remove", "path": "/hostname"}, {"op": "remove", "path": "/instance_uuid"}]
PROJECT_ID = {"op": "add", "path": "/project_id", "value": "other-project"}


def request_at(microversion: tuple[int, int] = (2, 0)) -> Request:
    """A request as ``Microversions`` leaves it, settled at ``microversion``."""
    return Request({"type": "http", "state": {"microversion": microversion}})


def caller(*roles: Role) -> RequestContext:
    return RequestContext(Identity(user_id="nova", project_id="alice-project", roles=roles))


def read(
    body: Any, microversion: tuple[int, int] = (2, 0), who: RequestContext | None = None
) -> ArqChanges:
    return bindings_from_patch(request_at(microversion), who or caller("member"), body)


def test_all_add_ops_bind_the_request_in_the_callers_project() -> None:
    changes = read({ARQ: BIND})
    assert changes.bind == [
        ArqBinding(
            arq_uuid=uuid.UUID(ARQ),
            hostname="compute1",
            device_rp_uuid=uuid.UUID(RP),
            instance_uuid=uuid.UUID(INSTANCE),
            project_id="alice-project",
        )
    ]
    assert changes.unbind == [] and changes.delete == []


def test_all_remove_ops_unbind_and_one_patch_may_do_both() -> None:
    changes = read({ARQ: BIND, OTHER: UNBIND})
    assert [b.arq_uuid for b in changes.bind] == [uuid.UUID(ARQ)]
    assert changes.unbind == [uuid.UUID(OTHER)]


def test_an_admin_sets_the_project_from_microversion_2_1() -> None:
    since = ApiFeature.BIND_PROJECT_ID.since
    changes = read({ARQ: [*BIND, PROJECT_ID]}, since, caller("admin"))
    assert changes.bind[0].project_id == "other-project"
    with pytest.raises(VersionNotAcceptable, match=re.escape("/project_id needs microversion 2.1")):
        read({ARQ: [*BIND, PROJECT_ID]}, (2, 0), caller("admin"))
    with pytest.raises(Forbidden, match="only an admin"):
        read({ARQ: [*BIND, PROJECT_ID]}, since, caller("member"))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([BIND], "must map accelerator request uuids"),
        ({}, "must map accelerator request uuids"),
        ({"not-a-uuid": BIND}, "'not-a-uuid' is not an accelerator request uuid"),
        ({ARQ: []}, f"{ARQ}: ops must be a non-empty list"),
        ({ARQ: {"op": "add"}}, f"{ARQ}: ops must be a non-empty list"),
        ({ARQ: [*BIND, {"op": "remove", "path": "/hostname"}]}, "all add or all remove"),
        ({ARQ: [{"op": "replace", "path": "/hostname", "value": "x"}]}, "all add or all remove"),
        ({ARQ: ["add"]}, "all add or all remove"),
        ({ARQ: [*BIND, {"op": "add", "path": "/state", "value": "Bound"}]}, "'/state' cannot"),
        ({ARQ: [{"op": "remove", "path": "/attach_handle"}]}, "cannot be patched"),
        ({ARQ: [*BIND[:2], {"op": "add", "path": "/instance_uuid"}]}, "needs a string value"),
        ({ARQ: [*BIND[:2], {"op": "add", "path": "/instance_uuid", "value": ""}]}, "string"),
        ({ARQ: BIND[:1]}, f"binding {ARQ} needs device_rp_uuid, instance_uuid"),
    ],
)
def test_a_malformed_patch_is_refused_naming_what_is_wrong(body: Any, problem: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(problem)):
        read(body)


def test_a_value_of_the_wrong_shape_is_refused_naming_its_field() -> None:
    bad = [*BIND[:2], {"op": "add", "path": "/instance_uuid", "value": "instance-1"}]
    with pytest.raises(InvalidInput, match=f"binding {ARQ}: instance_uuid") as refused:
        read({ARQ: bad})
    assert [problem.field for problem in refused.value.problems] == ["instance_uuid"]


def test_more_requests_than_one_patch_may_change_are_refused() -> None:
    body = {str(uuid.UUID(int=n)): UNBIND for n in range(MAX_ARQS_PER_PATCH + 1)}
    with pytest.raises(InvalidInput, match=f"at most {MAX_ARQS_PER_PATCH}"):
        read(body)
    del body[str(uuid.UUID(int=0))]
    assert len(read(body).unbind) == MAX_ARQS_PER_PATCH

"""Who may call what: OpenStack Cyborg's default policies, by role.

Cyborg checks every rule against the caller's own project, so a project clause
holds for any project-scoped token; what separates callers is the role. Tenant
isolation of accelerator requests is a filter on the data (see
accelerator_requests.visible), not a rule here.
"""

from __future__ import annotations

from starlette.requests import Request

from accel.api.auth import RequestContext
from accel.errors import Forbidden, Unauthorized

ANY_ROLE = frozenset({"admin", "manager", "member", "reader", "service"})
ADMIN = frozenset({"admin"})
MANAGER_OR_ADMIN = frozenset({"admin", "manager"})
MEMBER_OR_SERVICE = frozenset({"admin", "member", "service"})

RULES: dict[str, frozenset[str]] = {
    "cyborg:device_profile:get_all": ANY_ROLE,
    "cyborg:device_profile:get_one": ANY_ROLE,
    "cyborg:device_profile:create": ADMIN,
    "cyborg:device_profile:delete": ADMIN,
    "cyborg:arq:get_all": ANY_ROLE,
    "cyborg:arq:get_one": ANY_ROLE,
    "cyborg:arq:create": MEMBER_OR_SERVICE,
    "cyborg:arq:update": MEMBER_OR_SERVICE,
    "cyborg:arq:delete": MEMBER_OR_SERVICE,
    "cyborg:device:get_all": MANAGER_OR_ADMIN,
    "cyborg:device:get_one": MANAGER_OR_ADMIN,
    "cyborg:device:enable": ADMIN,
    "cyborg:device:disable": ADMIN,
    "cyborg:deployable:get_all": MANAGER_OR_ADMIN,
    "cyborg:deployable:get_one": MANAGER_OR_ADMIN,
    "cyborg:deployable:program": ADMIN,
    "cyborg:attribute:get_all": MANAGER_OR_ADMIN,
    "cyborg:attribute:get_one": MANAGER_OR_ADMIN,
    "cyborg:attribute:create": ADMIN,
    "cyborg:attribute:delete": ADMIN,
    "accel:fleet:get": MANAGER_OR_ADMIN,
}


def context(request: Request) -> RequestContext:
    found: RequestContext | None = request.scope.get("state", {}).get("context")
    if found is None:
        raise Unauthorized("authentication required")
    return found


def authorize(request: Request, rule: str) -> RequestContext:
    """The caller's context, if ``rule`` lets its roles through; 403 otherwise."""
    caller = context(request)
    if not RULES[rule] & set(caller.identity.roles):
        raise Forbidden(f"Access was denied to the following resource: {rule}")
    return caller

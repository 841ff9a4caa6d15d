"""Who may call what: OpenStack Cyborg's default policies, by role, overridable.

Cyborg checks every rule against the caller's own project, so a project clause
holds for any project-scoped token; what separates callers is the role. Tenant
isolation of accelerator requests is a filter on the data (see
accelerator_requests.visible), not a rule here.

Binding, unbinding and deleting a bound ARQ are Nova's, as in Cyborg since
CVE-2026-40214: by default they need a service token (``X-Service-Token``) whose
owner has the service role, so a project member cannot bind its ARQ to a provider
Nova's scheduler did not choose. A deployment whose Nova sends no service token
sets those rules to ``"role:admin"``, say.

``accel api --policy-file FILE`` overrides rules with a JSON object of rule name to
check string, in oslo.policy's simplest forms: ``"role:admin or role:member"``,
``"service_roles:service"`` (the service token's roles), ``"@"`` (any authenticated
caller) or ``"!"`` (nobody).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from starlette.requests import Request

from accel.api.auth import RequestContext, read_json_object
from accel.errors import Forbidden, Unauthorized

ANY_ROLE = frozenset({"admin", "manager", "member", "reader", "service"})
ADMIN = frozenset({"admin"})
MANAGER_OR_ADMIN = frozenset({"admin", "manager"})
MEMBER_OR_SERVICE = frozenset({"admin", "member", "service"})
SERVICE_TOKEN = frozenset({"service_roles:service"})
CHECK_PREFIXES = ("role:", "service_roles:")

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
    "cyborg:arq:bind": SERVICE_TOKEN,
    "cyborg:arq:unbind": SERVICE_TOKEN,
    "cyborg:arq:delete_bound": SERVICE_TOKEN,
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
    "accel:hardware:clear_health": ADMIN,
    "accel:hardware:confirm_failures": ADMIN,
    "accel:operation:create": ADMIN,
    "accel:operation:get": MANAGER_OR_ADMIN,
    "accel:placement:get": ADMIN,
}


def parse_check(rule: str, check: object) -> frozenset[str]:
    """The roles a check string lets through; ValueError for what accel cannot read."""
    if not isinstance(check, str):
        raise ValueError(f"{rule}: the check must be a string")
    text = check.strip()
    if text == "@":
        return ANY_ROLE
    if text == "!":
        return frozenset()
    credentials = set()
    for term in (part.strip() for part in text.split(" or ")):
        if not term.startswith(CHECK_PREFIXES) or term in CHECK_PREFIXES:
            raise ValueError(f"{rule}: {term!r} is not role:NAME, service_roles:NAME, @ or !")
        credentials.add(term.removeprefix("role:"))
    return frozenset(credentials)


def load_policy(path: Path | None) -> dict[str, frozenset[str]]:
    """The default rules, with those in ``path`` (if any) put in their place."""
    rules = dict(RULES)
    if path is None:
        return rules
    document = read_json_object(path, "policy file")
    unknown = sorted(set(document) - set(RULES))
    if unknown:
        raise ValueError(f"policy file {path}: unknown rule(s) {', '.join(unknown)}")
    rules.update({rule: parse_check(rule, check) for rule, check in document.items()})
    return rules


def context(request: Request) -> RequestContext:
    found: RequestContext | None = request.scope.get("state", {}).get("context")
    if found is None:
        raise Unauthorized("authentication required")
    return found


def permits(rules: Mapping[str, frozenset[str]], caller: RequestContext, rule: str) -> bool:
    """Whether ``rule`` lets ``caller``'s roles through: the one check, for a routed
    request (``authorize``) and for one answered from the cache (accel.api.fast_reads)."""
    return not rules[rule].isdisjoint(caller.credentials)


def authorize(request: Request, rule: str) -> RequestContext:
    """The caller's context, if ``rule`` lets its roles through; 403 otherwise."""
    caller = context(request)
    rules: dict[str, frozenset[str]] = getattr(request.app.state, "policy", RULES)
    if not permits(rules, caller, rule):
        raise Forbidden(f"Access was denied to the following resource: {rule}")
    return caller

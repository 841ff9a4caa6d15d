"""The fleet page's views: server-rendered HTML, the same data and policy as the API.

Each view is a route of the api's one route table, guarded by the policy rule of the
API list it shows (accel.api.policy). A browser's navigation carries no token: under
``--auth token`` or ``keystone`` such a request is answered 401 with the page's frame
and a token form and no data; the page's script keeps the token in the tab's session
storage and sends it as ``X-Auth-Token`` on every request htmx makes (links and forms
are boosted, so navigation carries it too). The page refreshes its content every few
seconds: that request asks for the content alone (``Accel-UI-Part: content``) and is
answered 304 while its ETag is unchanged. The ETag is known before anything is read
or rendered (accel.api.ui.freshness), so an unchanged view costs the generation and
one small statement, not the fleet's queries and template.

Everything from the fleet (node names, models, alarm messages) goes into HTML through
Jinja2 with autoescaping on, and the Content-Security-Policy sent with every page lets
only the api's own script and style files run: no inline script or style.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from accel.api.auth import RequestContext
from accel.api.cache import not_modified
from accel.api.devices import timestamp
from accel.api.fleet import agent_rows, alarm_rows
from accel.api.operations import operation_rows
from accel.api.policy import authorize, permits
from accel.api.queries import reader, valid_uuid
from accel.api.ui import freshness, model
from accel.errors import InvalidInput, NotFound, Unauthorized
from accel.internal.schemas import Kind
from accel.states import HealthState
from accel.web.queries import only_params

HERE = Path(__file__).parent
REFRESH_SECONDS = 5
# The device table shows this many rows at most, and says how many more match: a
# table of 10,000 rows takes a browser seconds to lay out, and nobody reads it.
ROWS_SHOWN = 500
PART_HEADER = "accel-ui-part"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Always revalidated (the ETag), never shared: what a page shows depends on who asks.
    "cache-control": "no-cache, private",
    "vary": "Accel-UI-Part, X-Auth-Token",
}

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# A view's data, from the request, its caller and its checked query parameters.
Load = Callable[[Request, RequestContext, dict[str, str]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class View:
    name: str
    template: str
    rule: str  # the policy rule of the API list the view shows
    load: Load
    summary: str  # what it shows, as openapi.json says it
    query: tuple[str, ...] = ()  # the query parameters it takes (filters)


def _caller(request: Request) -> RequestContext | None:
    found: RequestContext | None = request.scope.get("state", {}).get("context")
    return found


def _page(
    request: Request, view: View, status: int, etag: str | None = None, **context: Any
) -> Response:
    partial = request.headers.get(PART_HEADER) == "content"
    prefix: str = request.scope.get("root_path", "")
    query = request.url.query
    body = templates.get_template(view.template).render(
        partial=partial,
        view=view.name,
        ui=prefix + "/ui",
        # What the page refreshes from: under the catalog's prefix too.
        here=prefix + request.scope["path"] + (f"?{query}" if query else ""),
        refresh=REFRESH_SECONDS,
        signed_in=status != 401,
        **context,
    )
    headers = {**PAGE_HEADERS, "etag": etag} if etag else PAGE_HEADERS
    return Response(body.encode(), status, headers=headers, media_type="text/html; charset=utf-8")


def handler(view: View) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        caller = _caller(request)
        if caller is None:
            if request.headers.get(PART_HEADER) == "content":
                raise Unauthorized("authentication required: send a valid X-Auth-Token")
            return _page(request, view, 401, empty=True)
        authorize(request, view.rule)
        params = ui_params(request, view.query)
        partial = request.headers.get(PART_HEADER) == "content"
        etag = await freshness.view_etag(request, view.name, caller, partial)
        if not_modified(request.headers, etag):
            return Response(status_code=304, headers={**PAGE_HEADERS, "etag": etag})
        loaded = await view.load(request, caller, params)
        return _page(request, view, 200, etag, empty=False, **loaded)

    return serve


def ui_params(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The view's query parameters, checked as the API checks its own; an empty one
    (a filter form's "any") is left out."""
    given = [(key, value) for key, value in request.query_params.multi_items() if value]
    scope = {**request.scope, "query_string": urlencode(given).encode()}
    return only_params(Request(scope), allowed)


def _choice(params: dict[str, str], name: str, choices: list[str]) -> str | None:
    value = params.get(name)
    if value is not None and value not in choices:
        raise InvalidInput(f"query parameter {name} must be one of {', '.join(choices)}")
    return value


async def load_fleet(
    request: Request, caller: RequestContext, params: dict[str, str]
) -> dict[str, Any]:
    found = await reader(request).run(lambda session: model.fleet(session, caller))
    return {"fleet": found, "conditions": list(model.Condition)}


KINDS = [kind.value for kind in Kind]
CONDITIONS = [condition.value for condition in model.Condition]
HEALTHS = [state.value for state in HealthState]


async def load_devices(
    request: Request, caller: RequestContext, params: dict[str, str]
) -> dict[str, Any]:
    kind = _choice(params, "kind", KINDS)
    condition = _choice(params, "state", CONDITIONS)
    health = _choice(params, "health", HEALTHS)
    node = params.get("node")

    def query(session: Session) -> tuple[list[model.DeviceLine], list[str]]:
        lines = model.device_lines(session, caller, node=node, kind=kind)
        nodes = [line.name for line in model.node_lines(agent_rows(session), {})]
        return lines, nodes

    lines, nodes = await reader(request).run(query)
    shown = [
        line
        for line in lines
        if (condition is None or line.condition == condition)
        and (health is None or line.health.state == health)
    ]
    return {
        "devices": shown[:ROWS_SHOWN],
        "matched": len(shown),
        "nodes": nodes,
        "kinds": KINDS,
        "conditions": CONDITIONS,
        "healths": HEALTHS,
        "chosen": {"node": node, "kind": kind, "state": condition, "health": health},
    }


def _history(line: model.DeviceLine, alarms: list[Any], operations: list[Any]) -> list[Any]:
    """What happened to a device, oldest first: (time, what, detail)."""
    events: list[tuple[str, str, str]] = [(line.first_seen or "", "appeared", "")]
    if line.vanished_at:
        events.append((line.vanished_at, "vanished", ""))
    if line.health.since:
        events.append((line.health.since, f"health {line.health.state}", line.health.why))
    for alarm in alarms:
        events.append((timestamp(alarm.raised_at) or "", f"alarm {alarm.kind}", alarm.message))
        if alarm.cleared_at is not None:
            events.append((timestamp(alarm.cleared_at) or "", f"alarm {alarm.kind} cleared", ""))
    for operation in operations:
        what = f"setup {operation.action} {operation.state}"
        events.append((timestamp(operation.created_at) or "", what, operation.error or ""))
    return sorted(events, key=lambda event: event[0])


async def load_device(
    request: Request, caller: RequestContext, params: dict[str, str]
) -> dict[str, Any]:
    uuid = valid_uuid(request.path_params["uuid"], "device uuid")
    rules = request.app.state.policy
    may_see_operations = permits(rules, caller, "accel:operation:get")
    may_see_arqs = permits(rules, caller, "cyborg:arq:get_all")

    def query(session: Session) -> dict[str, Any]:
        lines = model.device_lines(session, caller, uuid=uuid)
        report = model.device_report(session, uuid)
        if not lines or report is None:
            raise NotFound(f"Device not found with uuid={uuid}")
        alarms = alarm_rows(session, "all", subject=uuid)
        operations = operation_rows(session, {"device_uuid": uuid}) if may_see_operations else []
        arqs = model.device_arqs(session, caller, uuid) if may_see_arqs else []
        return {
            "device": lines[0],
            "hardware": report,
            "history": _history(lines[0], alarms, operations),
            "arqs": arqs,
            "may_see_arqs": may_see_arqs,
        }

    return await reader(request).run(query)


async def load_alarms(
    request: Request, caller: RequestContext, params: dict[str, str]
) -> dict[str, Any]:
    return {"alarms": await reader(request).run(model.alarm_lines)}


VIEWS = {
    view.name: view
    for view in (
        View(
            "fleet",
            "fleet.html",
            "accel:fleet:get",
            load_fleet,
            "The fleet page: a roll-up per node, totals and active alarms",
        ),
        View(
            "devices",
            "devices.html",
            "cyborg:device:get_all",
            load_devices,
            "The device table, filtered by node, kind, state and health",
            ("node", "kind", "state", "health"),
        ),
        View(
            "device",
            "device.html",
            "cyborg:device:get_one",
            load_device,
            "One device: its facts, history and accelerator requests",
        ),
        View(
            "alarms",
            "alarms.html",
            "accel:fleet:get",
            load_alarms,
            "The active alarms, each subject linked",
        ),
    )
}


class Page(Route):
    """A route of the fleet page: serves ``view`` (openapi.json lists these as text/html)."""

    def __init__(self, path: str, view: View) -> None:
        super().__init__(path, handler(view), methods=["GET"])
        self.view = view

"""The operator's fleet page at ``GET /ui/`` on the api's port (DESIGN "The fleet page").

Server-rendered (Jinja2 templates in ``templates/``) with htmx, vendored in
``static/`` with its version and licence; no front-end build. The views
(accel.api.ui.views) are routes of the api's one route table (accel.api.app.ROUTES)
under the API's authentication and policy; their data comes from the API's own
queries (accel.api.ui.model).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from accel.api.ui.views import HERE, VIEWS, Page

routes: list[BaseRoute] = [
    Page("/ui", VIEWS["fleet"]),
    Page("/ui/devices", VIEWS["devices"]),
    Page("/ui/devices/{uuid}", VIEWS["device"]),
    Page("/ui/alarms", VIEWS["alarms"]),
    Mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static"),
]

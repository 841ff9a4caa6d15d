"""Run by Nova 34's own Python, imported by the scripts beside it: Nova started as
its services start (its config read, its objects registered) and the request context
of the plan's user, so each script says only what it drives.
"""

from __future__ import annotations

from typing import Any


def start_nova(plan: dict[str, Any]) -> Any:
    """Nova configured from ``plan["conf"]``; the context of alice, a member of
    ``plan["project"]`` carrying ``plan["user_token"]``."""
    from nova import conf, context, objects

    conf.CONF([], project="nova", default_config_files=[plan["conf"]])
    objects.register_all()
    return context.RequestContext(
        user_id="alice",
        project_id=plan["project"],
        auth_token=plan["user_token"],
        roles=["member"],
    )

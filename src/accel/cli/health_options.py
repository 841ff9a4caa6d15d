"""The driver's health flags (docs/health.md); like every flag, each also reads
``ACCEL_<FLAG>`` and the config file's ``[driver]`` section (``health-policy`` there
is a list of ``"CHECK=ACTION"`` strings)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from accel.cli.options import option, positive
from accel.driver.health.gpu import DEFAULT_IGNORED_XIDS
from accel.driver.health.monitor import HEALTH_INTERVAL
from accel.driver.health.policy import FAILED_HOLD, HealthPolicy, parse_actions, parse_xids

Command = TypeVar("Command", bound=Callable[..., Any])


def health_options(command: Command) -> Command:
    """The health flags on ``command``, which takes ``health_interval`` and the policy
    they make as one ``health_policy`` (a HealthPolicy)."""

    @functools.wraps(command)
    def with_policy(*args: Any, **flags: Any) -> Any:
        flags["health_policy"] = health_settings(
            flags.pop("health_policy"),
            flags.pop("health_ignore_xids"),
            flags.pop("health_recover_polls"),
            flags.pop("health_correctable_limit"),
            flags.pop("health_flap_count"),
            flags.pop("health_flap_window"),
            flags.pop("health_failed_hold"),
        )
        return command(*args, **flags)

    decorators = [
        option(
            "--health-interval",
            type=float,
            default=HEALTH_INTERVAL,
            callback=positive,
            help="Seconds between health polls of every device.",
        ),
        option(
            "--health-policy",
            multiple=True,
            metavar="CHECK=ACTION",
            show_default=False,
            help="What a check's bad reading does: ignore, degrade, fail or latch "
            "(repeatable; docs/health.md lists the checks and their defaults).",
        ),
        option(
            "--health-ignore-xids",
            default=",".join(str(x) for x in sorted(DEFAULT_IGNORED_XIDS)),
            metavar="XID[,XID...]",
            help="NVIDIA XIDs that say nothing about the device (application errors).",
        ),
        option(
            "--health-recover-polls",
            type=click.IntRange(min=1),
            default=3,
            help="Polls of positive evidence before a device leaves a worse state.",
        ),
        option(
            "--health-correctable-limit",
            type=click.IntRange(min=1),
            default=10,
            help="Correctable errors (AER, QAT RAS) in one poll that count as bad.",
        ),
        option(
            "--health-flap-count",
            type=click.IntRange(min=2),
            default=3,
            help="Entries into failed within the flap window that latch a device failed.",
        ),
        option(
            "--health-flap-window",
            type=float,
            default=3600.0,
            callback=positive,
            help="Seconds over which entries into failed are counted as flapping.",
        ),
        option(
            "--health-failed-hold",
            type=click.FloatRange(min=0),
            default=FAILED_HOLD,
            help="Seconds a failed device stays failed after its last failing reading, "
            "so that the conductor sees a short failure.",
        ),
    ]
    decorated: Any = with_policy
    for decorate in reversed(decorators):
        decorated = decorate(decorated)
    return cast(Command, decorated)


def health_settings(
    policy: tuple[str, ...],
    ignore_xids: str,
    recover_polls: int,
    correctable_limit: int,
    flap_count: int,
    flap_window: float,
    failed_hold: float,
) -> HealthPolicy:
    try:
        actions = parse_actions(policy)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--health-policy") from exc
    try:
        xids = parse_xids(ignore_xids)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--health-ignore-xids") from exc
    return HealthPolicy(
        actions=actions,
        correctable_limit=correctable_limit,
        ignored_xids=xids,
        recover_polls=recover_polls,
        flap_count=flap_count,
        flap_window=flap_window,
        failed_hold=failed_hold,
    )

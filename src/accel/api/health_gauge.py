"""``accel_hardware_health``: one series per present device on the api's ``/metrics``.

``accel_hardware_health{node, hardware, kind, state, reason} 1``: the device's health
as ``/v2/hardware`` shows it, with the checks behind it as ``reason`` (the name is
fixed: dashboards use it). Read from the database at scrape time, so every api
replica serves the same series; one narrow query, and the checks' JSON is parsed
only for devices that are not ok.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from sqlalchemy import select
from sqlalchemy.orm import Session

from accel.conductor.health import HEALTH_COLUMNS, failure_reason
from accel.db.models import Device
from accel.states import HealthState

NAME = "accel_hardware_health"
LABELS = ("node", "hardware", "kind", "state", "reason")


class HealthCollector:
    """A collector over rows read once for one scrape."""

    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            NAME,
            "1 per present device, labelled with its health state and the checks behind it.",
            labels=LABELS,
        )
        for row in self.rows:
            state = str(row.health_state or HealthState.UNKNOWN)
            reason = "" if state == HealthState.OK else failure_reason(row)
            gauge.add_metric([row.hostname, row.uuid, row.type, state, reason], 1)
        yield gauge


def health_rows(session: Session) -> list[Any]:
    statement = (
        select(Device.hostname, Device.uuid, Device.type, *HEALTH_COLUMNS)
        .where(Device.present.is_(True))
        .order_by(Device.id)
    )
    return list(session.execute(statement))

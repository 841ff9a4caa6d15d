"""A real Prometheus (Debian's, scripts/ensure-prometheus) scraping a running stack.

One stack for the module, on loopback: a conductor, an api under ``--auth token``
that Prometheus scrapes with its token as a bearer credential from a file (what
deploy/prometheus/prometheus.yml does), an agent and a GPU driver scraped with the
internal token, one GPU degraded (its link narrowed) and one vanished (an alarm).
Prometheus scrapes every second.

Then every query of the Grafana dashboard (deploy/grafana/accel-fleet.json) runs
against it: each returns series where the stack has data, and every metric and
label it names is on a scraped series, so a typo'd name fails here, not on an
operator's screen.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from accel.driver.fake_health import healthy, set_link
from accel.driver.fake_sysfs import build_gpu_server
from bench.daemons import free_port
from tests.integration.fleet import (
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    alarms,
    get,
    wait_for_devices,
)
from tests.processes import TOKEN, Cluster, Service, wait_until
from tests.test_deploy import GRAFANA_VARIABLES, dashboard, dashboard_queries

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="no prometheus here (scripts/ensure-prometheus installs it)"
)
API_TOKEN = "prometheus-scrape-token-0123456789"
TOKENS = {API_TOKEN: {"user_id": "prometheus", "project_id": "monitoring", "roles": ["manager"]}}
# Long enough for a counter to have two samples, short of the module's run.
RATE_WINDOW = "10m"
# Queries of what this stack does not run (no Placement, no Nova): nothing to show.
NO_DATA_HERE = {
    "accel_placement_calls_total": "no --placement-url",
    "accel_nova_events_total": "no --nova-url",
}
GPUS = ("0000:17:00.0", "0000:31:00.0", "0000:b1:00.0", "0000:ca:00.0")
# Labels PromQL or Prometheus make, not accel.
PROMQL_LABELS = {"le", "job", "instance"}


@dataclass
class Scraped:
    cluster: Cluster
    prometheus: str  # its URL

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": promql}, timeout=10)
        assert answer.status_code == 200, (promql, answer.text)
        body = answer.json()
        assert body["status"] == "success", (promql, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def targets(self) -> dict[str, list[dict[str, Any]]]:
        answer = httpx.get(f"{self.prometheus}/api/v1/targets", timeout=10).json()
        found: dict[str, list[dict[str, Any]]] = {}
        for target in answer["data"]["activeTargets"]:
            found.setdefault(target["labels"]["job"], []).append(target)
        return found


def _health_states(api: Service) -> set[str]:
    return {entry["health"]["state"] for entry in get(api, "/v2/hardware")["hardware"]}


def _config(workdir: Path, jobs: dict[str, tuple[str, Path]]) -> Path:
    """A Prometheus configuration scraping each job's target with its token file."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": job,
                "authorization": {"credentials_file": str(token)},
                "static_configs": [{"targets": [target]}],
            }
            for job, (target, token) in jobs.items()
        ],
    }
    path = workdir / "prometheus.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    workdir = tmp_path_factory.mktemp("prometheus")
    database = f"sqlite:///{workdir / 'accel.db'}"
    tokens = workdir / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    api_token, internal_token, wrong_token = (
        workdir / name for name in ("api-token", "internal-token", "wrong-token")
    )
    api_token.write_text(API_TOKEN + "\n")
    internal_token.write_text(TOKEN + "\n")
    wrong_token.write_text("not-the-token\n")
    gpus = build_gpu_server(workdir / "node")
    for address in GPUS:
        healthy(gpus, address, 0x10DE)
    cluster = Cluster(workdir)
    try:
        conductor = cluster.conductor(database, **FAST_CONDUCTOR)
        reader = cluster.api(database)  # for the test's own looks, under noauth
        api = cluster.api(database, auth="token", auth_tokens_file=tokens)
        agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
        driver = cluster.driver("GPU", agent, gpus.root, health_interval=0.2, **FAST_DRIVER)
        wait_for_devices(reader, 4, cluster.logs)
        set_link(gpus, GPUS[1], 4)
        wait_until(
            lambda: "degraded" in _health_states(reader) or None,
            "the narrowed GPU to be degraded",
            on_timeout=cluster.logs,
        )
        gpus.remove(GPUS[0])
        wait_until(
            lambda: ("hardware_vanished" in {kind for kind, _ in alarms(reader)}) or None,
            "the vanished GPU's alarm",
            on_timeout=cluster.logs,
        )
        jobs = {
            "accel-api": (api.endpoint, api_token),
            "accel-api-wrong-token": (api.endpoint, wrong_token),
            "accel-conductor": (conductor.endpoint, internal_token),
            "accel-agent": (agent.endpoint, internal_token),
            "accel-driver": (driver.endpoint, internal_token),
        }
        port = free_port()
        assert PROMETHEUS is not None
        argv = [
            PROMETHEUS,
            f"--config.file={_config(workdir, jobs)}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        url = f"http://127.0.0.1:{port}"
        cluster.spawn("prometheus", argv, None, url)
        found = Scraped(cluster, url)

        def every_target_scraped_twice() -> bool:
            try:
                targets = found.targets()
            except httpx.HTTPError:
                return False
            scraped = [t for job in targets.values() for t in job if t["health"] != "unknown"]
            # Two scrapes of each, so that rates have two samples.
            return len(scraped) == len(jobs) and bool(found.query("count_over_time(up[1m]) > 2"))

        wait_until(every_target_scraped_twice, "Prometheus to scrape", on_timeout=cluster.logs)
        yield found
    finally:
        cluster.stop_all()


def test_prometheus_scrapes_a_token_protected_api_with_a_bearer_token_file(
    scraped: Scraped,
) -> None:
    targets = scraped.targets()
    [api] = targets["accel-api"]
    assert api["health"] == "up", api["lastError"]
    [wrong] = targets["accel-api-wrong-token"]
    assert wrong["health"] == "down" and "401" in wrong["lastError"]
    for job in ("accel-conductor", "accel-agent", "accel-driver"):
        assert [t["health"] for t in targets[job]] == ["up"], targets[job]
    # The fleet's gauges came through the bearer-authenticated scrape.
    assert scraped.query('accel_fleet_agent_up{job="accel-api", node="node1"} == 1')


def _selectors(promql: str) -> list[tuple[str, set[str]]]:
    """Each series selector: its metric name and the label names it matches on."""
    found = []
    for match in re.finditer(r"\b(accel_[a-z0-9_]+|up)\b(\{[^}]*\})?", promql):
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", match[2] or ""))
        found.append((match[1], labels))
    return found


def _grouped_by(promql: str) -> set[str]:
    return {
        label.strip()
        for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", promql)
        for label in group.split(",")
        if label.strip()
    }


def _concrete(query: str) -> str:
    for variable, value in {**GRAFANA_VARIABLES, "$__rate_interval": RATE_WINDOW}.items():
        query = query.replace(variable, value)
    return query


def test_every_dashboard_query_finds_the_stacks_series(scraped: Scraped) -> None:
    queries = dashboard_queries()
    assert len(queries) > 20
    problems = []
    for query in queries:
        promql = _concrete(query)
        selectors = _selectors(promql)
        assert selectors, query
        names = {name for name, _ in selectors}
        if names & NO_DATA_HERE.keys():
            continue
        # Every label the query filters or groups by is on some series it reads.
        labels_read: set[str] = set()
        for name, matched in selectors:
            series = scraped.query(name)
            if not series:
                problems.append(f"{query}: no series named {name}")
                continue
            on_series = {label for one in series for label in one["metric"]}
            labels_read |= on_series
            problems += [f"{query}: {name} has no label {lab}" for lab in matched - on_series]
        missing = _grouped_by(promql) - labels_read - PROMQL_LABELS
        problems += [f"{query}: no series it reads has the label {label}" for label in missing]
        if not scraped.query(promql):
            problems.append(f"{query}: no series")
    assert problems == [], "\n".join(problems)


def test_every_dashboard_variable_lists_values(scraped: Scraped) -> None:
    """``label_values(metric, label)``: the node and kind pickers are not empty."""
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["definition"])
        assert found, variable["definition"]
        values = {one["metric"].get(found[2]) for one in scraped.query(found[1])} - {None}
        assert values, variable["definition"]


def test_a_typo_in_a_metric_or_a_label_is_caught(scraped: Scraped) -> None:
    """The check above, against queries that are wrong: it must see each."""
    right = 'max by (node) (accel_fleet_agent_up{node=~".*"})'
    assert scraped.query(right)
    [(name, labels)] = _selectors('max by (nod) (accel_fleet_agent_upp{nodee=~".*"})')
    assert scraped.query(name) == []
    on_series = {label for one in scraped.query("accel_fleet_agent_up") for label in one["metric"]}
    assert labels - on_series == {"nodee"}
    assert _grouped_by("max by (nod) (x)") - on_series == {"nod"}
    # A regex matcher on a label no series has still matches (the empty value): only
    # the label check tells the typo.
    assert scraped.query('accel_fleet_agent_up{nodee=~".*"}')

"""deploy/: the example config, the systemd units, the Grafana dashboard and the
Prometheus rules say only what accel accepts and serves.

Each unit's ExecStart is parsed by the real command line (with the example config in
place of /etc/accel/accel.toml), so a renamed flag breaks this test, not a fleet. The
rules and every dashboard query pass promtool, and every metric they name is served
by a running stack.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest

from accel.cli.main import _default_map, cli
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.schemas import Kind
from tests.integration.fleet import (
    AUTH,
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    alarms,
    samples,
    wait_for_devices,
)
from tests.processes import Cluster, wait_until

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CONFIG = DEPLOY / "accel.toml"
DASHBOARD = DEPLOY / "grafana" / "accel-fleet.json"
RULES = DEPLOY / "prometheus" / "accel-alerts.yml"
RULES_TESTS = DEPLOY / "prometheus" / "accel-alerts.test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool here (scripts/ensure-prometheus installs it)"
)

# Prometheus's own series about each scrape, not served by accel.
PROMETHEUS_OWN = {"up"}
# What the dashboard's queries may hold besides PromQL: Grafana's variables, each
# replaced by a value of its kind for promtool.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$node": ".*",
    "$kind": ".*",
    "$job": "accel.*",
}


def test_every_key_of_the_example_config_is_a_flag_of_its_command() -> None:
    defaults = _default_map(CONFIG)
    for name in ("driver", "agent", "conductor", "api"):
        command = cli.commands[name]
        flags = {param.name for param in command.params}
        assert set(defaults[name]) <= flags, (name, set(defaults[name]) - flags)


def unit_command(unit: Path, **environment: str) -> tuple[str, dict[str, Any]]:
    """The unit's command and its flags' values as the real command line parses them
    (the example config in place of /etc/accel/accel.toml), after systemd's
    specifiers and ``${VAR}``s: the unit's Environment= lines, then ``environment``
    (as an EnvironmentFile= would)."""
    lines = unit.read_text().splitlines()
    [exec_start] = [line.split("=", 1)[1] for line in lines if line.startswith("ExecStart=")]
    variables = dict(
        line.split("=", 1)[1].split("=", 1) for line in lines if line.startswith("Environment=")
    )
    variables.update(environment)
    argv = [
        re.sub(r"\$\{(\w+)\}", lambda m: variables[m[1]], word)
        for word in shlex.split(exec_start.replace("%i", "GPU").replace("%H", "node1"))
    ]
    assert argv[0] == "/opt/accel/bin/accel"
    assert argv[1:3] == ["--config", "/etc/accel/accel.toml"]
    name, args = argv[3], argv[4:]
    command = cli.commands[name]
    assert isinstance(command, click.Command)
    with click.Context(cli, info_name="accel", default_map=_default_map(CONFIG)) as parent:
        # Parses and validates every flag (required ones may come from the config).
        context = command.make_context(name, args, parent=parent, resilient_parsing=False)
        return name, context.params


@pytest.mark.parametrize("unit", sorted(DEPLOY.glob("*.service")), ids=lambda p: p.name)
def test_each_unit_runs_a_command_accel_accepts(unit: Path) -> None:
    _, params = unit_command(unit)
    assert params


def test_the_agent_unit_serves_every_built_in_driver_unless_told_otherwise() -> None:
    unit = DEPLOY / "accel-agent.service"
    name, params = unit_command(unit)
    assert name == "agent" and params["drivers"] == tuple(Kind)
    assert params["sysfs_root"] == Path("/")
    _, params = unit_command(unit, DRIVERS="QAT,NIC")  # GPU as accel-driver@GPU
    assert params["drivers"] == (Kind.QAT, Kind.NIC)
    _, params = unit_command(unit, DRIVERS="")
    assert params["drivers"] == ()
    name, params = unit_command(DEPLOY / "accel-driver@.service")
    assert name == "driver" and params["kind"] is Kind.GPU


def dashboard() -> dict[str, Any]:
    found: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return found


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard: its panels' and its variables'."""
    board = dashboard()
    queries = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["definition"])
            assert found, variable["definition"]
            queries.append(found[1])
    return queries


def metric_names(text: str) -> set[str]:
    """accel's metric names in PromQL (or in a rules file): they all start accel_."""
    return set(re.findall(r"\baccel_[a-z0-9_]+\b", text)) | {
        name for name in PROMETHEUS_OWN if re.search(rf"\b{name}\{{", text)
    }


def test_the_dashboard_is_importable_grafana_json() -> None:
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == source and target["expr"].strip(), panel["title"]
    for name in ("node", "kind"):
        assert variables[name]["datasource"] == source


@needs_promtool
def test_every_dashboard_query_is_promql(tmp_path: Path) -> None:
    """promtool parses each query, its Grafana variables replaced, as a recording rule."""
    rules: list[dict[str, str]] = []
    for index, query in enumerate(dashboard_queries()):
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, query
        rules.append({"record": f"dashboard:query_{index}", "expr": query})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    checked = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


@needs_promtool
def test_the_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    for argv in (["check", "rules", RULES.name], ["test", "rules", RULES_TESTS.name]):
        done = subprocess.run(
            [str(PROMTOOL), *argv], cwd=RULES.parent, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_the_example_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    """With its token files in place (promtool reads them), rules and all."""
    shutil.copy(RULES, tmp_path / RULES.name)
    config = tmp_path / PROMETHEUS_CONFIG.name
    text = PROMETHEUS_CONFIG.read_text()
    for name in ("internal-token", "prometheus-api-token"):
        token = tmp_path / name
        token.write_text("token")
        assert f"/etc/accel/{name}" in text
        text = text.replace(f"/etc/accel/{name}", str(token))
    config.write_text(text)
    done = subprocess.run(
        [str(PROMTOOL), "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Checking {tmp_path / RULES.name}" in done.stdout  # the rules were loaded


def test_every_metric_the_dashboard_and_the_rules_use_is_served(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR)
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    driver = cluster.driver("GPU", agent, gpu_server.root, **FAST_DRIVER)
    wait_for_devices(api, 4, cluster.logs())
    # A GPU falls off the bus: its alarm makes the conductor's alarm counter appear.
    gpu_server.remove("0000:17:00.0")
    wait_until(
        lambda: ("hardware_vanished" in {kind for kind, _ in alarms(api)}) or None,
        "the vanished GPU's alarm",
        on_timeout=cluster.logs,
    )

    served = {
        name
        for service, headers in ((driver, AUTH), (agent, AUTH), (conductor, AUTH), (api, {}))
        for name, _ in samples(service, headers)
    }
    used = metric_names(RULES.read_text()) | metric_names("\n".join(dashboard_queries()))
    assert used - served - PROMETHEUS_OWN == set()

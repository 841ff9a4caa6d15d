"""The fleet page in a real browser: headless Chromium (Debian's, installed by
scripts/ensure-chromium) driven by Playwright, against real processes on loopback.

One stack for the module: a conductor, an api without authentication and one with
tokens on the same database, a node with a fake GPU tree, and a node whose lying
driver reports a device name full of markup. One browser; each test opens its own
context (a fresh tab with empty storage).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from accel.internal.schemas import Kind
from tests.integration.fleet import FAST_AGENT, FAST_CONDUCTOR, FAST_DRIVER, wait_for_devices
from tests.integration.test_fleet_faults import pull_gpu
from tests.integration.test_hostile_reports import hostile_driver
from tests.integration.truth import Node, make_nodes, start_node
from tests.processes import Cluster, Service

MARKUP = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
TOKENS = {
    "admin-token": {"user_id": "ops", "project_id": "ops", "roles": ["admin"]},
    "reader-token": {"user_id": "r", "project_id": "p", "roles": ["reader"]},
}
# Long enough for a resync (1 s here) and the page's refresh (5 s) with room to spare.
SEEN_WITHIN_MS = 30_000


@dataclass
class Stack:
    cluster: Cluster
    api: Service
    token_api: Service
    gpu_node: Node


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("ui-browser")
    database = f"sqlite:///{workdir / 'accel.db'}"
    tokens = workdir / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    cluster = Cluster(workdir)
    try:
        conductor = cluster.conductor(database, **FAST_CONDUCTOR)
        api = cluster.api(database)
        token_api = cluster.api(database, auth="token", auth_tokens_file=tokens)
        [gpu_node] = make_nodes(workdir, 1, (Kind.GPU,))
        start_node(cluster, gpu_node, [conductor.url], FAST_AGENT, **FAST_DRIVER)
        odd = cluster.agent([conductor.url], "odd", **FAST_AGENT)
        hostile_driver(cluster, odd, "--product-name", MARKUP)
        wait_for_devices(api, len(gpu_node.truth()) + 1, on_timeout=cluster.logs)
        yield Stack(cluster, api, token_api, gpu_node)
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no chromium here (scripts/ensure-chromium installs Debian's)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, headless=True)
        yield launched
        launched.close()


@dataclass
class Tab:
    page: Page
    errors: list[str]


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []

    def note(message: ConsoleMessage) -> None:
        # Chromium reports each thing a Content-Security-Policy refused as an error.
        if message.type == "error":
            errors.append(message.text)

    page.on("console", note)
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield Tab(page, errors)
    context.close()


def test_the_page_loads_the_fleet_under_its_strict_csp(stack: Stack, tab: Tab) -> None:
    response = tab.page.goto(stack.api.url + "/ui/")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    node = tab.page.locator(f'#nodes tr[data-node="{stack.gpu_node.name}"]')
    expect(node.locator("td.agent")).to_have_text("UP")
    expect(tab.page.locator('#nodes tr[data-node="odd"] td[data-count="ready"]')).to_have_text("1")
    # htmx runs, with eval off, and nothing on the page was refused by the policy.
    assert tab.page.evaluate("htmx.config.allowEval") is False
    assert tab.errors == []


def test_a_name_with_markup_is_shown_as_text(stack: Stack, tab: Tab) -> None:
    tab.page.goto(stack.api.url + "/ui/devices?node=odd")
    expect(tab.page.locator("#devices tbody a")).to_have_text(MARKUP)
    assert tab.page.locator("#devices img, #devices tbody script").count() == 0
    assert tab.page.evaluate("window.pwned") is None
    assert tab.errors == []


def test_filters_choose_the_devices_shown(stack: Stack, tab: Tab) -> None:
    page = tab.page
    page.goto(stack.api.url + "/ui/devices")
    rows = page.locator("#devices tbody tr[data-uuid]")
    expect(rows.first).to_be_visible()
    every = rows.count()
    page.select_option("#filters select[name=node]", "odd")
    expect(page).to_have_url(re.compile(r"node=odd"))
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td").first).to_have_text("odd")
    page.select_option("#filters select[name=node]", "")
    expect(page).to_have_url(re.compile(r"node=(&|$)"))
    page.select_option("#filters select[name=state]", "vanished")
    expect(page).to_have_url(re.compile(r"node=&.*state=vanished"))
    for row in rows.all():
        assert row.get_attribute("data-condition") == "vanished"
    page.select_option("#filters select[name=state]", "")
    expect(rows).to_have_count(every)
    assert tab.errors == []


def test_a_vanished_device_and_its_alarm_show_without_a_reload(
    stack: Stack, browser: Browser, tab: Tab
) -> None:
    fleet = tab.page
    fleet.goto(stack.api.url + "/ui/")
    alarms = browser.new_context().new_page()
    alarms.goto(stack.api.url + "/ui/alarms")
    for page in (fleet, alarms):
        page.evaluate("window.notReloaded = true")
    node = stack.gpu_node
    vanished = fleet.locator(f'#nodes tr[data-node="{node.name}"] td[data-count="vanished"]')
    expect(vanished).to_have_text("0")

    uuid = pull_gpu(node, "0000:17:00.0")

    expect(vanished).to_have_text("1", timeout=SEEN_WITHIN_MS)
    alarm = alarms.locator(f'#alarms tr[data-kind="hardware_vanished"][data-subject="{uuid}"]')
    expect(alarm).to_be_visible(timeout=SEEN_WITHIN_MS)
    for page in (fleet, alarms):
        assert page.evaluate("window.notReloaded") is True
    # The alarm's subject links to the device's page, which tells its history.
    alarm.locator("a").click()
    expect(alarms.locator("#history")).to_contain_text("vanished")
    alarms.context.close()
    assert tab.errors == []


def test_a_token_protected_api_refuses_the_page_without_a_token(stack: Stack, tab: Tab) -> None:
    page = tab.page
    response = page.goto(stack.token_api.url + "/ui/")
    assert response is not None and response.status == 401
    expect(page.locator("#token-form")).to_be_visible()
    assert page.locator("#nodes").count() == 0
    assert stack.gpu_node.name not in page.content()

    page.fill("#token-input", "admin-token")
    page.click("#token-form button")
    expect(page.locator(f'#nodes tr[data-node="{stack.gpu_node.name}"]')).to_be_visible()
    # Navigation carries the token too (the page's links are htmx requests).
    page.click("nav a[href$='/ui/devices']")
    expect(page.locator("#devices tbody tr[data-uuid]").first).to_be_visible()
    # Signing out forgets the token: the page asks for one again.
    page.click("#sign-out")
    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#devices")).to_have_count(0)


def test_a_reader_sees_what_the_policy_lets_a_reader_see(stack: Stack, browser: Browser) -> None:
    page = browser.new_context().new_page()
    page.goto(stack.token_api.url + "/ui/")
    page.fill("#token-input", "reader-token")
    page.click("#token-form button")
    expect(page.locator("#problem")).to_contain_text("403")
    assert page.locator("#nodes").count() == 0
    page.context.close()

"""The dashboard in a real headless Chromium, against a real scheduler and agents.

Chromium and chromedriver come from Debian (``tests/setup_browser.sh``, run by
``make test``); when they are missing this fails and says how to install them.
"""

from __future__ import annotations

import time

import pytest
import torch
from selenium.webdriver.common.by import By

from anypu.sdk import RunOptions
from anypu.sdk.models import mlp
from scripts.dashboard_demo import PENDING_NAME, chromium_driver, start_demo_network

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    net = start_demo_network(tmp_path_factory.mktemp("dashboard"))
    yield net
    net.close()


@pytest.fixture(scope="module")
def browser():
    try:
        driver = chromium_driver()
    except RuntimeError as error:
        pytest.fail(str(error))
    yield driver
    driver.quit()


def wait_for(browser, css: str, *texts: str, timeout: float = 10.0) -> str:
    """The text of the first element matching ``css`` that contains every one of ``texts``."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        for element in browser.find_elements(By.CSS_SELECTOR, css):
            seen = element.text
            if all(t in seen for t in texts):
                return seen
        time.sleep(0.1)
    raise AssertionError(f"{css} never showed {texts}; last text: {seen!r}")


def test_overview_and_nodes_show_a_node_of_each_tier(network, browser):
    browser.get(network.url + "/#overview")
    for tier in ("cloud", "edge", "device"):
        wait_for(browser, f"#card-nodes [data-tier={tier}]", tier, "1 ready")
    browser.get(network.url + "/#nodes")
    assert "simulated" in wait_for(browser, ".node-card[data-tier=cloud]", "cloud-1", "A100")
    wait_for(browser, ".node-card[data-tier=edge]", "edge-1", "Ascend-310P")
    phone = wait_for(browser, ".node-card[data-tier=device]", "phone-1", "heartbeat")
    assert "simulated" not in phone  # the host's own CPU is real


def test_placements_show_the_finished_job_and_why_the_other_waits(network, browser):
    browser.get(network.url + "/#placements")
    done = wait_for(browser, f"tr[data-job={network.finished_job}]", "succeeded")
    assert "compute" in done and "ms" in done
    pending = wait_for(browser, f"[data-pending={network.pending_job}]", PENDING_NAME, "tpu")
    for node in ("cloud-1", "edge-1", "phone-1"):
        assert node in pending
    assert "unschedulable" in pending


def test_a_new_job_appears_within_two_seconds_without_reloading(network, browser):
    browser.get(network.url + "/#placements")
    wait_for(browser, f"tr[data-job={network.finished_job}]", "succeeded")
    browser.execute_script("window.anypuNotReloaded = true")
    handle = network.client.submit(
        mlp(width=64, depth=2), torch.randn(2, 64), RunOptions(name="late")
    )
    handle.result(timeout=60)
    wait_for(browser, f"tr[data-job={handle.job_id}]", "late", "succeeded", timeout=2.5)
    assert browser.execute_script("return window.anypuNotReloaded === true")


def test_a_call_with_a_deadline_shows_it_met_and_where_it_came_from(network, browser):
    handle = network.client.submit(
        mlp(width=64, depth=2),
        torch.randn(2, 64),
        RunOptions(name="timed", deadline_ms=60_000, split=False),
    )
    handle.result(timeout=60)
    browser.get(network.url + "/#placements")
    row = wait_for(browser, f"tr[data-job={handle.job_id}]", "timed", "succeeded", "met")
    assert "deadline 60000 ms met" in row and "from home" in row


def test_deployments_show_their_replicas_and_scale_events(network, browser):
    model = mlp(width=64, depth=2).eval()
    network.client.deploy(model, "mlp-service", example_inputs=torch.randn(8, 64), replicas=1)
    network.client.service("mlp-service")(torch.randn(8, 64))
    browser.get(network.url + "/#deployments")
    card = wait_for(browser, "[data-deployment=mlp-service]", "1/1 ready", "version 1")
    assert "deployed: 1 replica(s)" in card and "mlp-service.replica-0" in card
    network.client.undeploy("mlp-service")


def test_the_topology_draws_sites_links_and_the_job_flow(network, browser):
    browser.get(network.url + "/#topology")
    wait_for(browser, "#topology svg", "dc-frankfurt", "shop-7", "home", "18 ms")
    for tier in ("cloud", "edge", "device"):
        assert browser.find_elements(By.CSS_SELECTOR, f"#topology g[data-tier={tier}]")
    flows = browser.find_elements(By.CSS_SELECTOR, "#topology path[data-flow^='home->']")
    assert flows, "the finished job's flow from its origin is drawn"
    # Each site's round trip to the scheduler, as its agents measured it on their streams.
    wait_for(browser, "#topology tr[data-site='shop-7']", "edge-1", " ms", timeout=15)

"""The web UI in a real headless Chromium, against objects in given states on the real control plane.

No controller runs: every request, WorkflowExecution and PipelineRun is put in its state by the test,
so the pages must show exactly that. A screenshot of each page is saved under the test's tmp_path.
"""

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from lightkube import AsyncClient
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from kubernaut.api.audit import AuditEvent, build_event_id
from kubernaut.api.v1alpha1 import WorkflowExecution
from kubernaut.audit.factory import open_audit_store
from kubernaut.domain.pipelinerun import build_pipelinerun
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import NotificationRequestResource, PipelineRunResource
from kubernaut.web.server import UiConfig, serving
from tests.integration.harness import create_execution_namespace, eventually
from tests.integration.orchestrator_support import (
    create_rr,
    create_wfe,
    failed_wfe_status,
    rfc3339,
    set_rr_status,
    wfe_body,
)
from tests.integration.rr import rr_manifest

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Debian's headless Chromium driven by its chromedriver (no browser is downloaded)."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        message = "chromium and chromium-driver are needed (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The browser's blocking calls, run off the event loop that serves the UI."""

    def __init__(self, driver: webdriver.Chrome, base: str, shots: Path) -> None:
        self.driver, self.base, self.shots = driver, base, shots

    async def open(self, path: str) -> None:
        await asyncio.to_thread(self.driver.get, self.base + path)

    async def text(self, selector: str) -> str:
        def read() -> str:
            try:
                return "\n".join(e.text for e in self.driver.find_elements(By.CSS_SELECTOR, selector))
            except StaleElementReferenceException:  # <main> was swapped by the live refresh meanwhile
                return ""

        return await asyncio.to_thread(read)

    async def shows(self, selector: str, pattern: str, *, timeout: float = 10.0) -> str:
        """The text of `selector` once it matches `pattern`."""
        last = ""

        async def probe() -> str | None:
            nonlocal last
            last = await self.text(selector)
            return last if re.search(pattern, last) else None

        try:
            return await eventually(probe, timeout=timeout, what=f"{selector} matching {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{selector} showed {last!r}; {exc}") from None

    async def screenshot(self, name: str) -> Path:
        """The whole page: the window is made as tall as the page first."""
        path = self.shots / f"{name}.png"

        def shoot() -> None:
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(1400, max(int(height) + 120, 1000))
            self.driver.save_screenshot(str(path))

        await asyncio.to_thread(shoot)
        print(f"screenshot: {path}")
        return path


async def _status_of(base: str, path: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(base + path) as response:
        return response.status


def _event(rr: dict[str, Any], event_type: str, outcome: str, moment: datetime) -> AuditEvent:
    meta = rr["metadata"]
    return AuditEvent(
        event_id=build_event_id(meta["uid"], event_type),
        event_type=event_type,
        event_category="orchestration",
        event_action=event_type.rsplit(".", 1)[-1],
        event_outcome=outcome,
        actor_type="service",
        actor_id="remediation-orchestrator",
        resource_type="RemediationRequest",
        resource_id=meta["name"],
        correlation_id=meta["uid"],
        namespace=meta["namespace"],
        event_time=moment,
    )


@pytest_asyncio.fixture(loop_scope="session")
async def scene(kube: AsyncClient, namespace: str, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A target locked by a running execution with a request waiting on it, a request whose execution
    failed (with a notification and audit events), and a new request."""
    exec_ns = await create_execution_namespace(kube)
    target = {"kind": "Deployment", "name": "app", "namespace": namespace}
    target_string = f"{namespace}/Deployment/app"
    now = datetime.now(UTC)

    holder = await create_rr(kube, rr_manifest("rr-holder", namespace, target=target))
    wfe = await create_wfe(
        kube,
        wfe_body("we-holder", namespace, target_string, owner=holder),
        {"phase": "Running", "startTime": rfc3339(now), "pipelineRunRef": {"name": build_lock_name(target_string)}},
    )
    run = build_pipelinerun(WorkflowExecution.from_wire(wfe), namespace=exec_ns, service_account="runner")
    await kube.create(PipelineRunResource(run))
    await set_rr_status(
        kube,
        "rr-holder",
        namespace,
        {"overallPhase": "Executing", "workflowExecutionRef": {"name": "we-holder", "namespace": namespace}},
    )

    await create_rr(kube, rr_manifest("rr-busy", namespace, target=target))
    await set_rr_status(
        kube,
        "rr-busy",
        namespace,
        {
            "overallPhase": "Blocked",
            "blockReason": "ResourceBusy",
            "blockMessage": "<b>we-holder</b> runs on the target",
            "blockedUntil": rfc3339(now + timedelta(minutes=5)),
            "blockingWorkflowExecution": "we-holder",
        },
    )

    failed_target = {"kind": "Deployment", "name": "db", "namespace": namespace}
    failed = await create_rr(kube, rr_manifest("rr-failed", namespace, target=failed_target))
    await create_wfe(
        kube,
        wfe_body("we-failed", namespace, f"{namespace}/Deployment/db", owner=failed),
        {
            **failed_wfe_status(now + timedelta(seconds=4), execution=True, summary="disk full on node-3"),
            "pipelineRunRef": {"name": build_lock_name(f"{namespace}/Deployment/db")},
        },
    )
    note = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "NotificationRequest",
        "metadata": {"name": "nr-failed", "namespace": namespace},
        "spec": {
            "type": "escalation",
            "priority": "critical",
            "subject": "Remediation failed: rr-failed",
            "body": "see the timeline",
            "channels": ["console"],
        },
    }
    await kube.create(NotificationRequestResource(note))
    await set_rr_status(
        kube,
        "rr-failed",
        namespace,
        {
            "overallPhase": "Failed",
            "failurePhase": "Executing",
            "failureReason": "WorkflowExecutionFailed",
            "workflowExecutionRef": {"name": "we-failed", "namespace": namespace},
            "notificationRequestRefs": [{"name": "nr-failed", "namespace": namespace}],
            # After the creation (which the API server stamps in whole seconds), in the order they happen.
            "startTime": rfc3339(now + timedelta(seconds=1)),
            "analyzingStartTime": rfc3339(now + timedelta(seconds=2)),
            "executingStartTime": rfc3339(now + timedelta(seconds=3)),
            "completedAt": rfc3339(now + timedelta(seconds=5)),
        },
    )
    await create_rr(kube, rr_manifest("rr-new", namespace, target={"kind": "Node", "name": "node-7"}))

    audit_url = f"sqlite:///{(tmp_path / 'audit.db').as_posix().lstrip('/')}"
    async with open_audit_store(audit_url) as store:
        await store.append(
            [
                _event(failed, "orchestrator.lifecycle.started", "pending", now - timedelta(seconds=30)),
                _event(failed, "orchestrator.routing.passed", "success", now - timedelta(seconds=20)),
                _event(failed, "orchestrator.lifecycle.failed", "failure", now),
            ]
        )
    yield {"namespace": namespace, "exec_ns": exec_ns, "target": target_string, "audit_url": audit_url}


async def test_pages_show_the_requests_their_timeline_and_the_locks(
    kube: AsyncClient, kubeconfig: Path, scene: dict[str, Any], browser: webdriver.Chrome, tmp_path: Path
) -> None:
    ns, target = scene["namespace"], scene["target"]
    config = UiConfig(kubeconfig, scene["exec_ns"], scene["audit_url"], refresh_seconds=0.5)
    async with serving(config, "127.0.0.1", 0) as base:
        page = Page(browser, base, tmp_path)

        # 1. the live list
        await page.open("/")
        row = f'#remediations tr[data-name="{ns}/rr-busy"]'
        assert await page.shows(f"{row} .phase", "^Blocked$")
        assert await page.shows(f"{row} .target", f"^{re.escape(target)}$")
        assert await page.shows(f"{row} .why", r"^ResourceBusy \(4m\d+s left\)$")
        failed_row = f'#remediations tr[data-name="{ns}/rr-failed"]'
        assert await page.shows(f"{failed_row} .phase", "^Failed$")
        assert await page.shows(f"{failed_row} .why", "^WorkflowExecutionFailed$")
        assert await page.shows(f'#remediations tr[data-name="{ns}/rr-new"] .phase', "^New$")
        await page.screenshot("list")
        # It is live: a change on the server shows without reloading the page.
        await set_rr_status(kube, "rr-new", ns, {"overallPhase": "Completed", "outcome": "Remediated"})
        assert await page.shows(f'#remediations tr[data-name="{ns}/rr-new"] .outcome', "^Remediated$")

        # 2. one request's timeline: execution, failure details, notification, audit and its chain check
        await page.open(f"/remediations/{ns}/rr-failed")
        assert await page.shows("#phase", "^Failed$")
        assert await page.shows("#failure", "^Executing: WorkflowExecutionFailed$")
        assert await page.shows("#wfe-phase", "^Failed$")
        assert await page.shows("#pipelinerun", re.escape(build_lock_name(f"{ns}/Deployment/db")))
        details = await page.shows("#failure-details", "TaskFailed during execution")
        assert "disk full on node-3" in details
        assert "task-1 (index 0), exit code 3" in details
        assert await page.shows("#notifications", r"nr-failed\s+escalation\s+critical\s+Pending")
        assert await page.shows("#chain", "^Chain intact: 3 events, head sequence 3")
        audit = await page.shows("#audit", "orchestrator.lifecycle.failed")
        assert audit.index("lifecycle.started") < audit.index("routing.passed") < audit.index("lifecycle.failed")
        timeline = await page.shows("#timeline", "Workflow Failed")
        order = ["Created", "Pending", "Analyzing", "Executing: we-failed", "Workflow Failed", "Failed: Workflow"]
        assert [timeline.index(text) for text in order] == sorted(timeline.index(text) for text in order), timeline
        await page.screenshot("remediation")

        # Content is escaped: the block message's markup shows as text.
        await page.open(f"/remediations/{ns}/rr-busy")
        assert await page.shows("#block", r"^ResourceBusy \(4m\d+s left\): <b>we-holder</b> runs on the target$")

        # 3. the targets: the lock, its holder, what runs and who waits
        await page.open("/targets")
        target_row = f'#targets tr[data-target="{target}"]'
        assert await page.shows(f"{target_row} .lock", f"^{build_lock_name(target)}: Succeeded=not started$")
        assert await page.shows(f"{target_row} .holder", f"^{ns}/we-holder$")
        assert await page.shows(f"{target_row} .running", f"^{ns}/we-holder$")
        assert await page.shows(f"{target_row} .waiting", f"^{ns}/rr-busy$")
        await page.screenshot("targets")

        # A missing request is a 404 page.
        await page.open(f"/remediations/{ns}/no-such-request")
        assert await page.shows("#error-title", "^Not found$")
        assert await page.shows("#error-message", f"RemediationRequest {ns}/no-such-request not found")
        assert await _status_of(base, f"/remediations/{ns}/no-such-request") == 404


@pytest.fixture
def unreachable_kubeconfig(kubeconfig: Path, tmp_path: Path) -> Path:
    """The test control plane's kubeconfig, pointing at a port where nothing listens."""
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"
    path = tmp_path / "unreachable-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_an_unreachable_api_server_gives_an_error_page(
    unreachable_kubeconfig: Path, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    async with serving(UiConfig(unreachable_kubeconfig, "exec", None), "127.0.0.1", 0) as base:
        page = Page(browser, base, tmp_path)
        await page.open("/")
        assert await page.shows("#error-title", "^The API server could not be read$")
        assert await page.shows("#error-message", "^Transient: ")
        await page.screenshot("error")
        assert await _status_of(base, "/") == 502

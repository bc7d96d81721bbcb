"""Bad input and workflow selection: every request ends in a phase and a message saying what is
wrong, and the orchestrator neither crashes nor spins on it.

A request the API server admits can still name a target no workflow can act on, a workflow that
does not exist, or a catalog entry without a bundle. Catalog entries are cluster-scoped, so each
test uses its own signal names and deletes its entries.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.kube.resources import RemediationWorkflowResource, WorkflowExecutionResource
from tests.integration.harness import (
    create_execution_namespace,
    eventually,
    get_or_none,
    running,
    settings_for,
)
from tests.integration.orchestrator_support import (
    create_rr,
    create_wfe,
    notifications,
    reconciles,
    review_notifications,
    wait_phase,
    wfe_body,
    wfes,
)
from tests.integration.rr import rr_manifest
from tests.integration.tekton_support import played

pytestmark = pytest.mark.tekton

OBSERVE_SECONDS = 3.0
"""How long the tests watch a finished request for further reconciles (none may come)."""


async def assert_quiet(namespace: str) -> None:
    """No reconcile loop: a few passes at most (a waiting request re-checks every 5 s), where a hot
    loop would make hundreds."""
    before = reconciles(namespace)
    await asyncio.sleep(OBSERVE_SECONDS)  # an observation window, not a wait for an outcome
    assert reconciles(namespace) - before <= 5, reconciles(namespace) - before


@contextlib.asynccontextmanager
async def catalog(kube: AsyncClient, *entries: dict[str, Any]) -> AsyncIterator[list[str]]:
    """Cluster-scoped catalog entries for the duration of a test."""
    names = []
    try:
        for spec in entries:
            name = f"wf-{uuid.uuid4().hex[:10]}"
            await kube.create(
                RemediationWorkflowResource(
                    {
                        "apiVersion": "kubernaut.ai/v1alpha1",
                        "kind": "RemediationWorkflow",
                        "metadata": {"name": name},
                        "spec": spec,
                    }
                )
            )
            names.append(name)
        yield names
    finally:
        for name in names:
            await kube.delete(RemediationWorkflowResource, name)


def entry(workflow_id: str, signal: str, bundle: str, priority: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "workflowId": workflow_id,
        "version": "1.0.0",
        "containerImage": bundle,
        "match": {"signalNames": [signal]},
        "priority": priority,
        **extra,
    }


async def test_targets_no_workflow_can_act_on_fail_saying_why(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    cases = {
        "rr-slash": ({"kind": "apps/Deployment", "name": "api", "namespace": namespace}, "4 parts"),
        "rr-long": ({"kind": "Deployment", "name": "n" * 300, "namespace": namespace}, "not a valid object name"),
        "rr-space": ({"kind": "Deploy ment", "name": "api", "namespace": namespace}, "not a valid kind"),
    }
    settings = settings_for(exec_ns, execution={"cooldown": "1s"})
    async with running(kubeconfig, settings, ("orchestrator", "executor")):
        for name, (target, _) in cases.items():
            await create_rr(kube, rr_manifest(name, namespace, target=target))
        ended = {name: await wait_phase(kube, name, namespace, "Failed") for name in cases}
        await assert_quiet(namespace)
    for name, (_, why) in cases.items():
        assert why in ended[name]["message"], ended[name]
        assert ended[name]["failurePhase"] == "workflow_execution"
    assert [w["status"]["failureDetails"]["reason"] for w in await wfes(kube, namespace)] == ["ConfigurationError"] * 3


async def test_unknown_workflow_fails_analysis_and_asks_for_review(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    manifest = rr_manifest("rr-1", namespace, target=target, bundle=None, workflowRef={"workflowId": "no-such-wf"})
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",), audit=audit):
        await create_rr(kube, manifest)
        status = await wait_phase(kube, "rr-1", namespace, "Failed")
        await assert_quiet(namespace)
        [note] = await notifications(kube, namespace)
    assert status["failurePhase"] == "analysis"
    assert "no-such-wf" in status["failureReason"]
    assert "not in the catalog" in status["failureReason"]
    assert status["requiresManualReview"] is True
    assert note["spec"]["metadata"]["reason"] == "WorkflowNotFound"
    assert note["spec"]["priority"] == "high"
    assert note["spec"]["channels"] == ["slack", "email"]
    assert review_notifications(namespace, "WorkflowSelection", "WorkflowNotFound") == 1
    assert await wfes(kube, namespace) == []
    done = audit.of_type("orchestrator.lifecycle.completed", "rr-1")
    assert [e.event_data["failure_phase"] for e in done] == ["analysis"]


async def test_catalog_entry_without_a_bundle_fails_analysis(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    signal = f"NoBundle{uuid.uuid4().hex[:8]}"
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    async with (
        catalog(kube, entry("bundle-less", signal, "")),
        running(kubeconfig, settings_for(exec_ns), ("orchestrator",)),
    ):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target, bundle=None, signal_name=signal))
        status = await wait_phase(kube, "rr-1", namespace, "Failed")
        await assert_quiet(namespace)
    assert status["failurePhase"] == "analysis"
    assert "bundle-less" in status["failureReason"]
    assert "has no bundle" in status["failureReason"]
    assert await wfes(kube, namespace) == []


async def test_catalog_selects_the_highest_priority_match(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    signal = f"Selected{uuid.uuid4().hex[:8]}"
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    async with (
        catalog(
            kube,
            entry("low", signal, played("succeed:1s"), priority=1),
            entry("high", signal, played("succeed:2s"), priority=5, parameters={"REPLICAS": "3"}),
            entry("other-signal", f"{signal}X", played("succeed:3s"), priority=9),
        ) as names,
        running(kubeconfig, settings_for(exec_ns), ("orchestrator",)),
    ):
        await create_rr(kube, rr_manifest("rr-1", namespace, target=target, bundle=None, signal_name=signal))
        status = await wait_phase(kube, "rr-1", namespace, "Executing")
    wfe = (await kube.get(WorkflowExecutionResource, "we-rr-1", namespace=namespace)).to_dict()
    assert wfe["spec"]["workflowRef"]["workflowId"] == "high"
    assert wfe["spec"]["workflowRef"]["containerImage"] == played("succeed:2s")
    assert wfe["spec"]["parameters"] == {"REPLICAS": "3"}
    assert status["selectedWorkflow"]["source"] == f"catalog:{names[1]}"
    assert status["selectedWorkflow"]["workflowId"] == "high"


async def test_execution_name_taken_by_another_request_says_so(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    """`we-<rr>` already belongs to another request (e.g. a deleted one of the same name)."""
    exec_ns = await create_execution_namespace(kube)
    stranger = await create_rr(
        kube, rr_manifest("rr-stranger", namespace, target={"kind": "Node", "name": "elsewhere"})
    )
    await create_wfe(
        kube,
        wfe_body("we-rr-1", namespace, "Node/elsewhere", owner=stranger),
        {"phase": "Completed", "completionTime": "2020-01-01T00:00:00Z"},
    )
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    await create_rr(kube, rr_manifest("rr-1", namespace, target=target))
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):

        async def said() -> dict[str, Any] | None:
            status = await wait_phase(kube, "rr-1", namespace, "Analyzing", "Failed", "Executing")
            ready = next((c for c in status.get("conditions") or [] if c["type"] == "WorkflowExecutionReady"), {})
            return status if ready.get("status") == "False" or status["overallPhase"] != "Analyzing" else None

        status = await eventually(said, what="the request says why it has no execution")
        await assert_quiet(namespace)
    ready = next(c for c in status["conditions"] if c["type"] == "WorkflowExecutionReady")
    assert ready["reason"] == "WorkflowExecutionCreationFailed"
    assert "another request" in ready["message"]
    assert await get_or_none(kube, WorkflowExecutionResource, "we-rr-1", namespace) is not None

"""The orchestrator with the executor and the Tekton stand-in: whole remediations end to end."""

from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient

from kubernaut.kube.resources import RemediationRequestResource, WorkflowExecutionResource
from tests.integration.harness import create_execution_namespace, eventually, running, settings_for
from tests.integration.rr import rr_manifest, rr_status, wfe_names
from tests.integration.tekton_support import played

pytestmark = pytest.mark.tekton


async def phase_is(kube: AsyncClient, name: str, namespace: str, *phases: str) -> dict[str, Any] | None:
    status = await rr_status(kube, name, namespace)
    return status if status.get("overallPhase") in phases else None


async def test_happy_path_and_busy_target(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    settings = settings_for(exec_ns, execution={"cooldown": "1s"}, routing={"recentlyRemediatedCooldown": "1s"})
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    async with running(kubeconfig, settings, ("orchestrator", "executor")):
        await kube.create(
            RemediationRequestResource(
                rr_manifest("rr-1", namespace, target=target, bundle=played("succeed:1tasks-2s"))
            )
        )

        async def executing() -> dict[str, Any] | None:
            return await phase_is(kube, "rr-1", namespace, "Executing")

        status = await eventually(executing, what="rr-1 Executing")
        assert status["workflowExecutionRef"]["name"] == "we-rr-1"
        wfe = (await kube.get(WorkflowExecutionResource, "we-rr-1", namespace=namespace)).to_dict()
        assert wfe["spec"]["targetResource"] == f"{namespace}/Deployment/api"
        assert wfe["metadata"]["labels"]["kubernaut.ai/remediation-request"] == "rr-1"
        assert wfe["metadata"]["ownerReferences"][0]["name"] == "rr-1"

        # A second request (another signal) on the busy target is blocked, without a WFE.
        await kube.create(RemediationRequestResource(rr_manifest("rr-2", namespace, target=target)))

        async def blocked() -> dict[str, Any] | None:
            return await phase_is(kube, "rr-2", namespace, "Blocked")

        status2 = await eventually(blocked, what="rr-2 Blocked")
        assert status2["blockReason"] == "ResourceBusy"
        assert status2["blockingWorkflowExecution"] == "we-rr-1"
        assert "blockedUntil" not in status2
        assert "we-rr-2" not in await wfe_names(kube, namespace)

        async def completed() -> dict[str, Any] | None:
            return await phase_is(kube, "rr-1", namespace, "Completed")

        status = await eventually(completed, timeout=30, what="rr-1 Completed")
        assert status["outcome"] == "Remediated"
        assert status["completedAt"]

        # The lock is released after the cooldown; rr-2 then runs by itself.
        async def second_done() -> dict[str, Any] | None:
            return await phase_is(kube, "rr-2", namespace, "Completed", "Failed")

        status2 = await eventually(second_done, timeout=40, what="rr-2 finished")
        assert status2["overallPhase"] == "Completed", status2
        assert "we-rr-2" in await wfe_names(kube, namespace)

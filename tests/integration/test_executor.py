"""The executor against the real API server, with the test playing Tekton's part."""

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from lightkube import AsyncClient

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.client import patch_status
from kubernaut.kube.resources import PipelineRunResource, WorkflowExecutionResource
from tests.integration.executor_support import condition, metric, wfe_manifest, wfe_status
from tests.integration.harness import (
    OffsetClock,
    create_execution_namespace,
    events_for,
    eventually,
    get_or_none,
    running,
    settings_for,
    settled,
)


async def test_happy_path_creates_lock_mirrors_completion_and_releases(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    settings = settings_for(exec_ns, execution={"cooldown": "2s"})
    target = f"{namespace}/deployment/test-app"
    lock = build_lock_name(target)
    creations = metric("workflowexecution_reconciler_pipelinerun_creations_total")
    completed = metric("workflowexecution_reconciler_total", {"outcome": "Completed"})
    holds, held = metric("workflowexecution_lock_hold_seconds_count"), metric("workflowexecution_lock_hold_seconds_sum")
    clock = OffsetClock()
    async with running(kubeconfig, settings, ("executor",), audit=audit, clock=clock) as manager:
        await kube.create(
            WorkflowExecutionResource(
                wfe_manifest(
                    "wfe-a",
                    namespace,
                    target,
                    parameters={"REPLICA_COUNT": "3", "NAMESPACE": "production"},
                    executionConfig={"serviceAccountName": "custom-sa", "timeout": "20m"},
                )
            )
        )

        async def running_status() -> dict[str, Any] | None:
            status = await wfe_status(kube, "wfe-a", namespace)
            return status if status.get("phase") == "Running" else None

        status = await eventually(running_status, what="WFE Running")
        assert status["pipelineRunRef"]["name"] == lock
        assert status["startTime"]
        assert condition(status, "TektonPipelineCreated")["reason"] == "PipelineCreated"
        assert condition(status, "AuditRecorded")["status"] == "True"
        wfe = await kube.get(WorkflowExecutionResource, "wfe-a", namespace=namespace)
        assert "workflowexecution.kubernaut.ai/workflowexecution-cleanup" in wfe.metadata.finalizers

        pr = (await kube.get(PipelineRunResource, lock, namespace=exec_ns)).to_dict()
        assert pr["metadata"]["labels"] == {
            "kubernaut.ai/workflow-execution": "wfe-a",
            "kubernaut.ai/workflow-id": "restart-pod",
            "kubernaut.ai/target-resource": f"{namespace}__deployment__test-app",
            "kubernaut.ai/source-namespace": namespace,
        }
        assert pr["metadata"]["annotations"]["kubernaut.ai/target-resource"] == target
        assert [p["name"] for p in pr["spec"]["params"]] == ["NAMESPACE", "REPLICA_COUNT", "TARGET_RESOURCE"]
        assert pr["spec"]["params"][-1]["value"] == target
        assert pr["spec"]["pipelineRef"] == {
            "resolver": "bundles",
            "params": [
                {"name": "bundle", "value": "registry.example/workflows/restart-pod:1.0.0"},
                {"name": "name", "value": "workflow"},
                {"name": "kind", "value": "pipeline"},
            ],
        }
        assert pr["spec"]["taskRunTemplate"] == {"serviceAccountName": "kubernaut-workflow-runner"}
        assert "timeouts" not in pr["spec"]
        assert metric("workflowexecution_reconciler_pipelinerun_creations_total") == creations + 1
        started = audit.of_type("workflow.started", "wfe-a")
        assert len(started) == 1
        assert started[0].event_data["phase"] == "Running"
        assert started[0].event_data["pipelinerun_name"] == lock
        assert started[0].correlation_id == "wfe-a"

        # Tekton reports progress, then success 90 s after the start.
        await patch_status(
            kube,
            PipelineRunResource,
            lock,
            exec_ns,
            {
                "conditions": [
                    {"type": "Succeeded", "status": "Unknown", "reason": "Running", "message": "Tasks Completed: 0"}
                ]
            },
        )

        async def executing() -> bool:
            cond = condition(await wfe_status(kube, "wfe-a", namespace), "TektonPipelineRunning")
            return cond.get("message") == "Pipeline executing (Running)"

        await eventually(executing, what="Running condition mirrored")
        start = status["startTime"]
        clock.advance(100)  # the run took 90 s; 10 s later the 2 s cooldown has passed
        finished = (datetime.fromisoformat(start.replace("Z", "+00:00")) + timedelta(seconds=90)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        await patch_status(
            kube,
            PipelineRunResource,
            lock,
            exec_ns,
            {
                "completionTime": finished,
                "conditions": [
                    {
                        "type": "Succeeded",
                        "status": "True",
                        "reason": "Succeeded",
                        "message": "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 0",
                    }
                ],
            },
        )

        async def completed_status() -> dict[str, Any] | None:
            status = await wfe_status(kube, "wfe-a", namespace)
            return status if status.get("phase") == "Completed" else None

        status = await eventually(completed_status, what="WFE Completed")
        assert status["completionTime"] == finished
        assert status["duration"] == "1m30s"
        assert "failureDetails" not in status
        assert condition(status, "TektonPipelineComplete")["reason"] == "PipelineSucceeded"
        assert condition(status, "TektonPipelineRunning")["status"] == "True"
        assert len(audit.of_type("workflow.completed", "wfe-a")) == 1
        await settled(manager)
        assert metric("workflowexecution_reconciler_total", {"outcome": "Completed"}) == completed + 1

        # The completion lies further back than the cooldown: the lock goes at once.
        async def released() -> bool:
            return await get_or_none(kube, PipelineRunResource, lock, exec_ns) is None

        await eventually(released, what="lock released")
        await settled(manager)  # the LockReleased Event follows the delete
        reasons = {reason for _, reason, _ in await events_for(kube, namespace, "wfe-a")}
        assert {"PipelineRunCreated", "WorkflowCompleted", "LockReleased"} <= reasons
        # Held from the start to the release, on the executor's clock: the 100 s it was advanced.
        assert metric("workflowexecution_lock_hold_seconds_count") == holds + 1
        assert 100 <= metric("workflowexecution_lock_hold_seconds_sum") - held < 160

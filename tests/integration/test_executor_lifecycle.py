"""The executor's lifecycle against the real API server, with the test playing Tekton's part.

Each test counts what the executor did: objects on the API server, status fields and conditions,
Kubernetes Events, audit events and metric deltas.
"""

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.types import PatchType

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import PipelineRunResource, WorkflowExecutionResource
from kubernaut.kube.runtime import Result
from tests.integration.executor_support import (
    CREATIONS,
    DURATIONS,
    FINALIZER,
    OUTCOMES,
    Metrics,
    SteppedClock,
    condition,
    create_taskrun,
    create_wfe,
    executor_of,
    idle_executor,
    isolated_wfes,  # noqa: F401 - a fixture
    patch_pipelinerun_status,
    pipelineruns,
    rfc3339,
    sample,
    succeeded,
    wait_events,
    wait_phase,
    wait_run_gone,
    wait_status,
    wfe_body,
    wfe_status,
)
from tests.integration.harness import (
    create_execution_namespace,
    create_namespace,
    events_for,
    eventually,
    get_or_none,
    hold_lock,
    running,
    settings_for,
)

pytestmark = pytest.mark.usefixtures("isolated_wfes")


async def test_reconcile_passes_one_by_one(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    """Finalizer first (nothing else), then the PipelineRun and Running, then progress every 10 s."""
    exec_ns = await create_execution_namespace(kube)
    clock = SteppedClock()
    target = "default/deployment/test-app"
    await create_wfe(
        kube,
        "wfe-a",
        namespace,
        target,
        parameters={"REPLICA_COUNT": "3", "NAMESPACE": "production"},
        executionConfig={"serviceAccountName": "custom-sa", "timeout": "20m"},
    )
    key = f"{namespace}/wfe-a"
    async with idle_executor(kubeconfig, settings_for(exec_ns), clock=clock) as (manager, executor):
        assert await executor.reconcile(key) == Result.after(0)
        body = await wfe_body(kube, "wfe-a", namespace)
        assert body["metadata"]["finalizers"] == [FINALIZER]
        assert not (body.get("status") or {}).get("phase")
        assert await pipelineruns(kube, exec_ns) == []

        assert await executor.reconcile(key) == Result.after(10)
        status = await wfe_status(kube, "wfe-a", namespace)
        assert status["phase"] == "Running"
        assert status["startTime"] == rfc3339(clock.now)
        assert status["pipelineRunRef"] == {"name": "wfe-196200272a2c85fd"}
        [pr] = await pipelineruns(kube, exec_ns)
        assert pr["metadata"]["name"] == "wfe-196200272a2c85fd"
        assert pr["metadata"]["labels"] == {
            "kubernaut.ai/workflow-execution": "wfe-a",
            "kubernaut.ai/workflow-id": "restart-pod",
            "kubernaut.ai/target-resource": "default__deployment__test-app",
            "kubernaut.ai/source-namespace": namespace,
        }
        assert pr["metadata"]["annotations"] == {"kubernaut.ai/target-resource": target}
        assert "ownerReferences" not in pr["metadata"]
        assert pr["spec"] == {
            "pipelineRef": {
                "resolver": "bundles",
                "params": [
                    {"name": "bundle", "value": "registry.example/workflows/restart-pod:1.0.0"},
                    {"name": "name", "value": "workflow"},
                    {"name": "kind", "value": "pipeline"},
                ],
            },
            "params": [
                {"name": "NAMESPACE", "value": "production"},
                {"name": "REPLICA_COUNT", "value": "3"},
                {"name": "TARGET_RESOURCE", "value": target},
            ],
            "taskRunTemplate": {"serviceAccountName": "kubernaut-workflow-runner"},
        }

        # Running, the PipelineRun has no condition yet.
        clock.advance(10)
        assert await executor.reconcile(key) == Result.after(10)
        status = await wfe_status(kube, "wfe-a", namespace)
        assert status["phase"] == "Running"
        assert status["pipelineRunStatus"] == {"status": "Unknown", "totalTasks": 0}
        running_cond = condition(status, "TektonPipelineRunning")
        assert running_cond["status"] == "True"
        assert running_cond["reason"] == "PipelineStarted"
        assert "waiting for Tekton" in running_cond["message"]

        await patch_pipelinerun_status(
            kube, "wfe-196200272a2c85fd", exec_ns, succeeded("Unknown", "Running", "Tasks Completed: 0")
        )
        await manager.prime()
        clock.advance(10)
        assert await executor.reconcile(key) == Result.after(10)
        status = await wfe_status(kube, "wfe-a", namespace)
        assert condition(status, "TektonPipelineRunning")["message"] == "Pipeline executing (Running)"
        assert status["pipelineRunStatus"] == {
            "status": "Unknown",
            "reason": "Running",
            "message": "Tasks Completed: 0",
            "totalTasks": 0,
        }
        # The condition kept its transition time: its status never changed.
        assert condition(status, "TektonPipelineRunning")["lastTransitionTime"] == running_cond["lastTransitionTime"]


async def test_start_is_recorded_once_with_its_correlation(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    metrics = Metrics()
    correlated, plain = f"{namespace}/Deployment/api", f"{namespace}/Deployment/web"
    async with running(kubeconfig, settings_for(exec_ns), ("executor",), audit=audit):
        await create_wfe(kube, "wfe-a", namespace, correlated, labels={"kubernaut.ai/correlation-id": "corr-42"})
        await create_wfe(kube, "wfe-b", namespace, plain)
        status = await wait_phase(kube, "wfe-a", namespace, "Running")
        await wait_phase(kube, "wfe-b", namespace, "Running")

        lock = build_lock_name(correlated)
        created = condition(status, "TektonPipelineCreated")
        assert (created["status"], created["reason"]) == ("True", "PipelineCreated")
        assert created["message"] == f"Created PipelineRun {exec_ns}/{lock}"
        recorded = condition(status, "AuditRecorded")
        assert (recorded["status"], recorded["reason"]) == ("True", "AuditSucceeded")
        assert recorded["message"] == "Audit event workflow.started recorded"

        assert metrics.delta() == {sample(CREATIONS): 2}
        [started] = audit.of_type("workflow.started", "wfe-a")
        assert (started.event_category, started.event_action, started.event_outcome) == (
            "workflow",
            "started",
            "success",
        )
        assert started.correlation_id == "corr-42"
        assert started.event_data["phase"] == "Running"
        assert started.event_data["pipelinerun_name"] == lock
        assert started.event_data["started_at"] == status["startTime"]
        [plain_started] = audit.of_type("workflow.started", "wfe-b")
        assert plain_started.correlation_id == "wfe-b"
        assert len(audit.events) == 2

        await wait_events(kube, namespace, "wfe-a", "PipelineRunCreated")
        events = await events_for(kube, namespace, "wfe-a")
        assert events == [("Normal", "PipelineRunCreated", f"Created PipelineRun {exec_ns}/{lock}")]


async def test_success_then_cooldown_then_release(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    """Tekton's completion time and duration are mirrored; the lock is held for the cooldown, and
    only this target is locked meanwhile."""
    exec_ns = await create_execution_namespace(kube)
    clock = SteppedClock()
    audit = MemoryAuditSink()
    target = f"{namespace}/deployment/app-a"
    lock = build_lock_name(target)
    async with running(kubeconfig, settings_for(exec_ns), ("executor",), audit=audit, clock=clock) as manager:
        executor = executor_of(manager)
        await create_wfe(kube, "wfe-a", namespace, target)
        status = await wait_phase(kube, "wfe-a", namespace, "Running")
        start = clock.now
        assert status["startTime"] == rfc3339(start)
        # The pass after the start mirrors the run as running; only then does Tekton finish it here.
        await wait_status(
            kube,
            "wfe-a",
            namespace,
            lambda s: any(c["type"] == "TektonPipelineRunning" for c in s.get("conditions") or []),
            "the TektonPipelineRunning condition",
        )

        metrics = Metrics()
        clock.advance(100)  # Tekton finished after 90 s; we look 10 s later
        await patch_pipelinerun_status(
            kube,
            lock,
            exec_ns,
            {
                "completionTime": rfc3339(start + timedelta(seconds=90)),
                **succeeded("True", "Succeeded", "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 0"),
            },
        )
        status = await wait_phase(kube, "wfe-a", namespace, "Completed")
        assert status["completionTime"] == rfc3339(start + timedelta(seconds=90))
        assert status["duration"] == "1m30s"
        assert "failureDetails" not in status
        complete = condition(status, "TektonPipelineComplete")
        assert (complete["status"], complete["reason"]) == ("True", "PipelineSucceeded")
        assert complete["message"] == "All tasks completed successfully in 1m30s"
        assert await wait_events(kube, namespace, "wfe-a", "WorkflowCompleted") == [
            ("Normal", "WorkflowCompleted", "Workflow restart-pod completed successfully in 1m30s")
        ]
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "TektonPipelineCreated": "True",
            "TektonPipelineRunning": "True",
            "TektonPipelineComplete": "True",
            "AuditRecorded": "True",
        }
        assert metrics.delta() == {
            sample(OUTCOMES, outcome="Completed"): 1,
            sample(f"{DURATIONS}_count", outcome="Completed"): 1,
            sample(f"{DURATIONS}_sum", outcome="Completed"): 90,
            sample(f"{DURATIONS}_bucket", outcome="Completed", le="160.0"): 1,
        }
        [completed] = audit.of_type("workflow.completed", "wfe-a")
        assert (completed.event_outcome, completed.event_data["duration"]) == ("success", "1m30s")

        # Two minutes after completion: the lock stays for the remaining three minutes.
        clock.set(start + timedelta(seconds=90 + 120))
        assert await executor.reconcile(f"{namespace}/wfe-a") == Result.after(180)
        assert await get_or_none(kube, PipelineRunResource, lock, exec_ns) is not None

        # Meanwhile another target of the same namespace runs at once.
        await create_wfe(kube, "wfe-b", namespace, f"{namespace}/deployment/app-b")
        await wait_phase(kube, "wfe-b", namespace, "Running")

        # Six minutes after completion: released, and nothing more to do.
        clock.set(start + timedelta(seconds=90 + 360))
        assert await executor.reconcile(f"{namespace}/wfe-a") == Result.done()
        await wait_run_gone(kube, lock, exec_ns)
        assert await get_or_none(kube, PipelineRunResource, build_lock_name(f"{namespace}/deployment/app-b"), exec_ns)
        lock_events = [e for e in await events_for(kube, namespace, "wfe-a") if e[1] == "LockReleased"]
        assert lock_events == [("Normal", "LockReleased", f"Lock released for {target} after cooldown")]


async def test_execution_failures_are_analysed(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    clock = SteppedClock()
    audit = MemoryAuditSink()
    async with running(kubeconfig, settings_for(exec_ns), ("executor",), audit=audit, clock=clock):

        async def start(name: str, target: str) -> tuple[str, Any]:
            await create_wfe(kube, name, namespace, target)
            await wait_phase(kube, name, namespace, "Running")
            return build_lock_name(target), clock.now

        # A task failed after 150 s: the second TaskRun, whose second step exited 137.
        metrics = Metrics()
        lock, started = await start("wfe-task", f"{namespace}/Deployment/task")
        await create_taskrun(kube, "tr-a", exec_ns, {**succeeded("True", "Succeeded"), "steps": []})
        await create_taskrun(
            kube,
            "tr-b",
            exec_ns,
            {
                **succeeded("False", "Failed", '"step-run" exited with code 137'),
                "steps": [
                    {"name": "prepare", "terminated": {"exitCode": 0}},
                    {"name": "run", "terminated": {"exitCode": 137}},
                ],
            },
        )
        clock.advance(150)
        message = "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 0"
        await patch_pipelinerun_status(
            kube,
            lock,
            exec_ns,
            {
                "startTime": rfc3339(started),
                "childReferences": [
                    {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "tr-a", "pipelineTaskName": "a"},
                    {"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": "tr-b", "pipelineTaskName": "b"},
                ],
                **succeeded("False", "Failed", message),
            },
        )
        status = await wait_phase(kube, "wfe-task", namespace, "Failed")
        details = status["failureDetails"]
        assert details["reason"] == "TaskFailed"
        assert details["wasExecutionFailure"] is True
        assert details["executionTimeBeforeFailure"] == "2m30s"
        assert (details["failedTaskIndex"], details["failedTaskName"], details["exitCode"]) == (1, "tr-b", 137)
        said = '"step-run" exited with code 137'  # the failed TaskRun's words; the PipelineRun only counts
        assert details["message"] == said
        assert details["failedAt"] == rfc3339(clock.now)
        assert (status["completionTime"], status["duration"]) == (rfc3339(clock.now), "2m30s")
        assert status["pipelineRunRef"] == {"name": lock}
        complete = condition(status, "TektonPipelineComplete")
        assert (complete["status"], complete["reason"], complete["message"]) == ("False", "TaskFailed", said)
        assert await wait_events(kube, namespace, "wfe-task", "WorkflowFailed") == [
            ("Warning", "WorkflowFailed", "Workflow restart-pod failed: TaskFailed")
        ]
        [failed] = audit.of_type("workflow.failed", "wfe-task")
        assert failed.event_outcome == "failure"
        assert failed.event_data["phase"] == "Failed"
        assert (failed.event_data["failure_reason"], failed.event_data["failure_message"]) == ("TaskFailed", said)
        assert failed.event_data["failed_task_name"] == "tr-b"
        assert metrics.delta() == {
            sample(CREATIONS): 1,
            sample(OUTCOMES, outcome="Failed"): 1,
            sample(f"{DURATIONS}_count", outcome="Failed"): 1,
            sample(f"{DURATIONS}_sum", outcome="Failed"): 150,
        }

        # OOMKilled: its own condition reason and a recommendation.
        lock, started = await start("wfe-oom", f"{namespace}/Deployment/oom")
        await patch_pipelinerun_status(
            kube,
            lock,
            exec_ns,
            {
                "startTime": rfc3339(started),
                **succeeded("False", "Failed", 'TaskRun "x" was OOMKilled (exit code 137)'),
            },
        )
        status = await wait_phase(kube, "wfe-oom", namespace, "Failed")
        assert status["failureDetails"]["reason"] == "OOMKilled"
        assert condition(status, "TektonPipelineComplete")["reason"] == "OOMKilled"
        lines = status["failureDetails"]["naturalLanguageSummary"].splitlines()
        assert [line for line in lines if line.startswith("Recommendation:")]

        # Quota, before anything started: not an execution failure.
        lock, _ = await start("wfe-quota", f"{namespace}/Deployment/quota")
        await patch_pipelinerun_status(
            kube, lock, exec_ns, succeeded("False", "Failed", "exceeded quota: compute resources")
        )
        status = await wait_phase(kube, "wfe-quota", namespace, "Failed")
        assert status["failureDetails"]["reason"] == "ResourceExhausted"
        assert "wasExecutionFailure" not in status["failureDetails"]
        assert condition(status, "TektonPipelineComplete")["reason"] == "PipelineFailed"

        # The summary people read.
        lock, started = await start("wfe-boom", "prod/Deployment/api")
        clock.advance(45)
        await patch_pipelinerun_status(
            kube, lock, exec_ns, {"startTime": rfc3339(started), **succeeded("False", "Failed", "boom")}
        )
        status = await wait_phase(kube, "wfe-boom", namespace, "Failed")
        summary = status["failureDetails"]["naturalLanguageSummary"]
        assert summary.startswith("Workflow 'restart-pod' failed on target 'prod/Deployment/api'.\n")
        for line in ("Reason: Unknown", "Error: boom", "Failed after: 45s"):  # whole words: no `oom` in `boom`
            assert line in summary.splitlines()

        # The PipelineRun deleted under a running WFE.
        lock, _ = await start("wfe-gone", f"{namespace}/Deployment/gone")
        await kube.delete(PipelineRunResource, lock, namespace=exec_ns)
        status = await wait_phase(kube, "wfe-gone", namespace, "Failed")
        details = status["failureDetails"]
        assert (details["reason"], details["message"]) == ("Unknown", "PipelineRun was deleted externally")
        assert (details["failedTaskIndex"], details["failedTaskName"]) == (0, "")
        assert "exitCode" not in details
        assert "wasExecutionFailure" not in details
        assert status["pipelineRunRef"] == {"name": lock}
        assert condition(status, "TektonPipelineComplete")["reason"] == "PipelineFailed"
        assert len(audit.of_type("workflow.failed")) == 5


async def test_audit_outage_never_blocks_the_run(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    audit.failing = True
    async with running(kubeconfig, settings_for(exec_ns), ("executor",), audit=audit):
        await create_wfe(kube, "wfe-a", namespace, f"{namespace}/Deployment/api")
        status = await wait_phase(kube, "wfe-a", namespace, "Running")
        recorded = condition(status, "AuditRecorded")
        assert (recorded["status"], recorded["reason"]) == ("False", "AuditFailed")
        assert "audit sink is rejecting writes" in recorded["message"]
        assert audit.events == {}
        assert audit.attempts >= 1


async def test_pre_execution_failure_is_counted_with_zero_duration(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    metrics = Metrics()
    async with running(kubeconfig, settings_for(exec_ns), ("executor",), audit=audit):
        await create_wfe(kube, "wfe-a", namespace, f"{namespace}/Deployment/api", containerImage="")
        status = await wait_phase(kube, "wfe-a", namespace, "Failed")
        details = status["failureDetails"]
        assert (details["reason"], details["message"]) == (
            "ConfigurationError",
            "workflowRef.containerImage is required",
        )
        assert "startTime" not in status
        assert "duration" not in status
        created = condition(status, "TektonPipelineCreated")
        assert (created["status"], created["reason"]) == ("False", "PipelineCreationFailed")
        assert created["message"] == "Failed to create PipelineRun: workflowRef.containerImage is required"
        assert await pipelineruns(kube, exec_ns) == []
        await wait_events(kube, namespace, "wfe-a", "WorkflowFailed")
        assert metrics.delta() == {
            sample(OUTCOMES, outcome="Failed"): 1,
            sample(f"{DURATIONS}_count", outcome="Failed"): 1,
            sample(f"{DURATIONS}_bucket", outcome="Failed", le="5.0"): 1,
        }
        [failed] = audit.of_type("workflow.failed", "wfe-a")
        assert failed.event_data["failure_reason"] == "ConfigurationError"
        events = await events_for(kube, namespace, "wfe-a")
        assert events == [
            (
                "Warning",
                "WorkflowFailed",
                "Pre-execution failure: ConfigurationError - workflowRef.containerImage is required",
            )
        ]


async def test_terminal_without_completion_time_keeps_the_lock(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    clock = SteppedClock()
    target = f"{namespace}/Deployment/api"
    lock = build_lock_name(target)
    await create_wfe(kube, "wfe-a", namespace, target)
    key = f"{namespace}/wfe-a"
    async with idle_executor(kubeconfig, settings_for(exec_ns), clock=clock) as (manager, executor):
        assert await executor.reconcile(key) == Result.after(0)
        assert await executor.reconcile(key) == Result.after(10)  # Running, its PipelineRun created
        await kube.patch(
            WorkflowExecutionResource.Status,
            "wfe-a",
            {"status": {"phase": "Failed", "completionTime": None}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        await manager.prime()
        clock.advance(3600)
        assert await executor.reconcile(key) == Result.done()
        assert await get_or_none(kube, PipelineRunResource, lock, exec_ns) is not None


async def test_deleting_a_running_wfe_releases_its_lock_only(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    target = f"{namespace}/Deployment/api"
    lock = build_lock_name(target)
    async with running(kubeconfig, settings_for(exec_ns), ("executor",)):
        await create_wfe(kube, "wfe-a", namespace, target)
        await wait_phase(kube, "wfe-a", namespace, "Running")
        uid = (await kube.get(PipelineRunResource, lock, namespace=exec_ns)).metadata.uid

        # A late WFE on the same target loses the race; deleting it leaves the winner's lock alone.
        await create_wfe(kube, "wfe-late", namespace, target)
        await wait_phase(kube, "wfe-late", namespace, "Failed")
        await kube.delete(WorkflowExecutionResource, "wfe-late", namespace=namespace)

        async def late_gone() -> bool:
            return await get_or_none(kube, WorkflowExecutionResource, "wfe-late", namespace) is None

        await eventually(late_gone, what="wfe-late deleted")
        assert (await kube.get(PipelineRunResource, lock, namespace=exec_ns)).metadata.uid == uid

        await kube.delete(WorkflowExecutionResource, "wfe-a", namespace=namespace)

        async def gone() -> bool:
            return await get_or_none(kube, WorkflowExecutionResource, "wfe-a", namespace) is None

        await eventually(gone, what="wfe-a deleted")
        await wait_run_gone(kube, lock, exec_ns)
        deleted = await wait_events(kube, namespace, "wfe-a", "WorkflowExecutionDeleted")
        assert deleted == [
            ("Normal", "WorkflowExecutionDeleted", "WorkflowExecution cleanup completed (phase: Running)")
        ]


async def test_a_cold_cache_still_releases_the_lock(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    """Right after a restart the PipelineRun cache may not be filled yet: a deleted WFE must still
    take its PipelineRun with it instead of dropping its finalizer and leaking the lock."""
    exec_ns = await create_execution_namespace(kube)
    target = f"{namespace}/Deployment/api"
    lock = build_lock_name(target)
    key = f"{namespace}/wfe-a"
    await create_wfe(kube, "wfe-a", namespace, target)
    async with idle_executor(kubeconfig, settings_for(exec_ns), clock=SteppedClock()) as (_manager, executor):
        await executor.reconcile(key)
        await executor.reconcile(key)
    await kube.delete(WorkflowExecutionResource, "wfe-a", namespace=namespace)
    async with idle_executor(kubeconfig, settings_for(exec_ns), clock=SteppedClock()) as (_manager, executor):
        for body in executor.pipelineruns.all():
            executor.pipelineruns.delete(body)  # the PipelineRun watch has not delivered yet
        assert await executor.reconcile(key) == Result.done()
    await wait_run_gone(kube, lock, exec_ns)
    assert await get_or_none(kube, WorkflowExecutionResource, "wfe-a", namespace) is None


async def test_pipelinerun_events_wake_exactly_their_wfe(kube: AsyncClient, kubeconfig: Path) -> None:
    exec_ns = await create_execution_namespace(kube)
    other_ns = await create_namespace(kube, "other")
    woken: list[str] = []
    async with running(kubeconfig, settings_for(exec_ns), ("executor",)) as manager:
        controller = executor_of(manager).controller
        enqueue = controller.enqueue

        def record(key: str) -> None:
            woken.append(key)
            enqueue(key)

        controller.enqueue = record  # type: ignore[method-assign]

        def pipelinerun(name: str, namespace: str, labels: dict[str, str]) -> Any:
            return PipelineRunResource(
                {
                    "apiVersion": "tekton.dev/v1",
                    "kind": "PipelineRun",
                    "metadata": {"name": name, "namespace": namespace, "labels": labels},
                    "spec": {},
                }
            )

        owner = {"kubernaut.ai/workflow-execution": "wfe-a", "kubernaut.ai/source-namespace": "team-1"}
        await kube.create(pipelinerun("unlabelled", exec_ns, {}))
        await kube.create(pipelinerun("no-source", exec_ns, {"kubernaut.ai/workflow-execution": "wfe-a"}))
        await kube.create(pipelinerun("elsewhere", other_ns, owner))
        await kube.create(pipelinerun("labelled", exec_ns, owner))

        async def woke() -> bool:
            return "team-1/wfe-a" in woken

        await eventually(woke, what="team-1/wfe-a enqueued")
        # The watch delivers in order: everything created before has been seen by now.
        assert woken == ["team-1/wfe-a"]


async def test_block_clearance_records_who_cleared_it(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    clock = SteppedClock()
    audit = MemoryAuditSink()
    async with running(kubeconfig, settings_for(exec_ns), ("executor",), audit=audit, clock=clock) as manager:
        executor = executor_of(manager)
        for name in ("wfe-unverified", "wfe-stamped"):
            target = f"{namespace}/Deployment/{name}"
            await create_wfe(kube, name, namespace, target)
            await wait_phase(kube, name, namespace, "Running")
            await patch_pipelinerun_status(
                kube,
                build_lock_name(target),
                exec_ns,
                {"startTime": rfc3339(clock.now), **succeeded("False", "Failed", "Tasks Completed: 1 (Failed: 1)")},
            )
            status = await wait_phase(kube, name, namespace, "Failed")
            assert status["failureDetails"]["wasExecutionFailure"] is True

        clock.advance(30)
        cleared_at = rfc3339(clock.now)
        annotations = {
            "wfe-unverified": {"kubernaut.ai/clear-execution-block": "ack-by-bob"},
            "wfe-stamped": {
                "kubernaut.ai/clear-execution-block": "ack-by-bob",
                "kubernaut.ai/execution-block-cleared-by": "bob@example.com",
            },
        }
        expected_by = {"wfe-unverified": "unverified:ack-by-bob", "wfe-stamped": "bob@example.com"}
        for name, values in annotations.items():
            await kube.patch(
                WorkflowExecutionResource,
                name,
                {"metadata": {"annotations": values}},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
            status = await wait_status(kube, name, namespace, lambda s: "blockClearance" in s, f"{name} block cleared")
            assert status["blockClearance"] == {
                "clearedAt": cleared_at,
                "clearedBy": expected_by[name],
                "clearReason": "ack-by-bob",
                "clearMethod": "Annotation",
            }
            [event] = audit.of_type("workflowexecution.block.cleared", name)
            assert (event.actor_type, event.actor_id) == ("user", expected_by[name])
            cleared = await wait_events(kube, namespace, name, "ExecutionBlockCleared")
            assert cleared == [
                ("Normal", "ExecutionBlockCleared", f"Execution block cleared by {expected_by[name]}: ack-by-bob")
            ]

        # A later change of the annotation does not clear again.
        clock.advance(30)
        await kube.patch(
            WorkflowExecutionResource,
            "wfe-unverified",
            {"metadata": {"annotations": {"kubernaut.ai/clear-execution-block": "again"}}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        key = f"{namespace}/wfe-unverified"

        async def cached() -> bool:
            body = executor.wfes.get(key) or {}
            return body["metadata"]["annotations"].get("kubernaut.ai/clear-execution-block") == "again"

        await eventually(cached, what="the new annotation reaches the executor")
        await executor.reconcile(key)
        body = await wfe_body(kube, "wfe-unverified", namespace)
        assert body["status"]["blockClearance"]["clearReason"] == "ack-by-bob"
        assert body["status"]["blockClearance"]["clearedAt"] == cleared_at
        assert len(audit.of_type("workflowexecution.block.cleared")) == 2


async def test_a_running_wfe_never_mirrors_another_wfes_pipelinerun(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    """While the executor was down, our PipelineRun was deleted and another WFE took the lock: the
    run we started is gone (it must not be reported Completed by someone else's success)."""
    exec_ns = await create_execution_namespace(kube)
    target = f"{namespace}/Deployment/api"
    lock = build_lock_name(target)
    key = f"{namespace}/wfe-a"
    await create_wfe(kube, "wfe-a", namespace, target)
    async with idle_executor(kubeconfig, settings_for(exec_ns), clock=SteppedClock()) as (_manager, executor):
        await executor.reconcile(key)
        await executor.reconcile(key)
    assert (await wfe_status(kube, "wfe-a", namespace))["phase"] == "Running"

    await kube.delete(PipelineRunResource, lock, namespace=exec_ns)
    foreign = await hold_lock(kube, lock, exec_ns, holder="wfe-other", source_namespace="team-2")
    await patch_pipelinerun_status(kube, lock, exec_ns, succeeded("True", "Succeeded", "Tasks Completed: 1"))

    async with idle_executor(kubeconfig, settings_for(exec_ns), clock=SteppedClock()) as (_manager, executor):
        await executor.reconcile(key)
    status = await wfe_status(kube, "wfe-a", namespace)
    assert status["phase"] == "Failed"
    assert status["failureDetails"]["message"] == "PipelineRun was deleted externally"
    assert (await kube.get(PipelineRunResource, lock, namespace=exec_ns)).metadata.uid == foreign.metadata.uid

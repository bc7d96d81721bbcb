"""The executor on real Tekton, with kwok playing the pods: every outcome the whole way from creation
to the release of the lock, its audit and its metrics."""

from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.domain.duration import format_go_duration
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import PipelineRunResource
from tests.integration.executor_support import (
    CREATIONS,
    OUTCOMES,
    Metrics,
    condition,
    create_wfe,
    isolated_wfes,  # noqa: F401 - a fixture
    parse_time,
    sample,
    wait_events,
    wait_phase,
    wait_run_gone,
    watching_pipelineruns,
)
from tests.integration.harness import create_execution_namespace, eventually, running, settings_for
from tests.integration.tekton_support import played

pytestmark = [pytest.mark.tekton, pytest.mark.usefixtures("isolated_wfes")]


def wire_duration(status: dict[str, Any]) -> str:
    return format_go_duration(parse_time(status["completionTime"]) - parse_time(status["startTime"]))


async def test_every_outcome_on_real_tekton(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    metrics = Metrics()
    runs: dict[str, tuple[str, str]] = {
        "wfe-ok": ("succeed:2tasks-1s", "Completed"),
        "wfe-fail": ("fail:task2of3-exit3-1s", "Failed"),
        "wfe-oom": ("oom:task1of2-1s", "Failed"),
        "wfe-timeout": ("timeout:2tasks-4s", "Failed"),  # the first task runs, the second hangs
        "wfe-pull": ("imagepull:1s", "Failed"),
    }
    locks = {name: build_lock_name(f"{namespace}/Deployment/{name}") for name in runs}
    settings = settings_for(exec_ns, execution={"cooldown": "1s"})
    async with running(kubeconfig, settings, ("executor",), audit=audit):
        for name, (bundle, _) in runs.items():
            await create_wfe(kube, name, namespace, f"{namespace}/Deployment/{name}", containerImage=played(bundle))
        statuses: dict[str, dict[str, Any]] = {}
        for name, (_, phase) in runs.items():
            statuses[name] = await wait_phase(kube, name, namespace, phase)

        ok = statuses["wfe-ok"]
        assert ok["duration"] == wire_duration(ok)  # a 1 s run; the wire keeps whole seconds
        assert condition(ok, "TektonPipelineComplete")["reason"] == "PipelineSucceeded"
        assert "failureDetails" not in ok

        fail = statuses["wfe-fail"]["failureDetails"]
        assert fail["reason"] == "TaskFailed"
        assert (fail["failedTaskIndex"], fail["failedTaskName"], fail["exitCode"]) == (
            1,
            f"{locks['wfe-fail']}-task-2",
            3,
        )
        assert fail["wasExecutionFailure"] is True
        assert condition(statuses["wfe-fail"], "TektonPipelineComplete")["reason"] == "TaskFailed"

        oom = statuses["wfe-oom"]["failureDetails"]
        assert oom["reason"] == "OOMKilled"
        assert (oom["failedTaskIndex"], oom["failedTaskName"], oom["exitCode"]) == (
            0,
            f"{locks['wfe-oom']}-task-1",
            137,
        )
        assert oom["wasExecutionFailure"] is True

        timeout = statuses["wfe-timeout"]["failureDetails"]
        assert timeout["reason"] == "DeadlineExceeded"
        assert timeout["wasExecutionFailure"] is True
        assert condition(statuses["wfe-timeout"], "TektonPipelineComplete")["reason"] == "DeadlineExceeded"

        pull = statuses["wfe-pull"]["failureDetails"]
        assert pull["reason"] == "ImagePullBackOff"
        assert "wasExecutionFailure" not in pull  # nothing ran
        assert any(line.startswith("Recommendation:") for line in pull["naturalLanguageSummary"].splitlines())

        # After the cooldown every lock is released.
        for name in runs:
            await wait_events(kube, namespace, name, "LockReleased")
            await wait_run_gone(kube, locks[name], exec_ns)

        # The target is free again: the next run on it gets a new PipelineRun and completes.
        async with watching_pipelineruns(kube, exec_ns) as watch:
            await create_wfe(
                kube,
                "wfe-ok-again",
                namespace,
                f"{namespace}/Deployment/wfe-ok",
                containerImage=played("succeed:1tasks-0s"),
            )
            await wait_phase(kube, "wfe-ok-again", namespace, "Completed")
            assert [name for name, _ in watch.created] == [locks["wfe-ok"]]

        await wait_events(kube, namespace, "wfe-ok-again", "WorkflowCompleted")
        assert metrics.delta()[sample(CREATIONS)] == 6
        assert metrics.delta()[sample(OUTCOMES, outcome="Completed")] == 2
        assert metrics.delta()[sample(OUTCOMES, outcome="Failed")] == 4
        for name in runs:
            assert len(audit.of_type("workflow.started", name)) == 1
        assert len(audit.of_type("workflow.completed")) == 2
        assert len(audit.of_type("workflow.failed")) == 4


async def test_tekton_finishes_while_the_executor_is_down(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    """The run completes between two executor processes; the second one records it, once."""
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()  # shared: stands for the durable store both processes write to
    metrics = Metrics()
    target = f"{namespace}/Deployment/api"
    lock = build_lock_name(target)
    settings = settings_for(exec_ns)
    async with running(kubeconfig, settings, ("executor",), audit=audit):
        await create_wfe(kube, "wfe-a", namespace, target, containerImage=played("succeed:2tasks-2s"))
        await wait_phase(kube, "wfe-a", namespace, "Running")

    async def finished() -> dict[str, Any] | None:
        pipelinerun = (await kube.get(PipelineRunResource, lock, namespace=exec_ns)).to_dict()
        done = pipelinerun.get("status", {}).get("completionTime")
        return pipelinerun if done else None

    pipelinerun = await eventually(finished, what="Tekton finishes the run")

    async with running(kubeconfig, settings, ("executor",), audit=audit):
        status = await wait_phase(kube, "wfe-a", namespace, "Completed")
        await wait_events(kube, namespace, "wfe-a", "WorkflowCompleted")

    assert status["completionTime"] == pipelinerun["status"]["completionTime"]
    assert status["duration"] == wire_duration(status)
    delta = metrics.delta()
    assert delta[sample(CREATIONS)] == 1
    assert delta[sample(OUTCOMES, outcome="Completed")] == 1
    assert delta[sample("workflowexecution_reconciler_duration_seconds_count", outcome="Completed")] == 1
    assert [e.event_type for e in audit.events.values()] == ["workflow.started", "workflow.completed"]

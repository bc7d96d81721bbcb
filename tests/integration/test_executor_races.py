"""The lock under contention, bad input and API errors on create: the executor keeps its promises."""

import asyncio
from pathlib import Path

import httpx2 as httpx
import pytest
from lightkube import AsyncClient

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import PipelineRunResource
from kubernaut.kube.runtime import Result
from tests.integration.executor_support import (
    CREATIONS,
    OUTCOMES,
    Metrics,
    SteppedClock,
    api_error,
    condition,
    create_wfe,
    executor_of,
    fail_pipelinerun_creates,
    isolated_wfes,  # noqa: F401 - a fixture
    pipelineruns,
    sample,
    wait_events,
    wait_phase,
    watching_pipelineruns,
    wfe_status,
)
from tests.integration.harness import (
    create_execution_namespace,
    create_namespace,
    events_for,
    eventually,
    running,
    settings_for,
)

pytestmark = pytest.mark.usefixtures("isolated_wfes")


async def test_burst_on_one_target_has_one_winner(kube: AsyncClient, kubeconfig: Path) -> None:
    exec_ns = await create_execution_namespace(kube)
    namespaces = [await create_namespace(kube, "team") for _ in range(4)]
    target = "prod/Deployment/api"
    lock = build_lock_name(target)
    clock = SteppedClock()
    audit = MemoryAuditSink()
    metrics = Metrics()
    names = [(namespaces[i % 4], f"wfe-{i:02d}") for i in range(20)]
    settings = settings_for(exec_ns, execution={"cooldown": "2s"})
    async with (
        watching_pipelineruns(kube, exec_ns) as watch,
        running(kubeconfig, settings, ("executor",), audit=audit, clock=clock) as manager,
    ):
        await asyncio.gather(*(create_wfe(kube, name, ns, target) for ns, name in names))

        async def settled() -> dict[str, list[tuple[str, str]]] | None:
            phases: dict[str, list[tuple[str, str]]] = {}
            for ns, name in names:
                phase = (await wfe_status(kube, name, ns)).get("phase") or "Pending"
                phases.setdefault(phase, []).append((ns, name))
            return phases if "Pending" not in phases else None

        phases = await eventually(settled, what="every WFE of the burst settled")
        assert sorted(phases) == ["Failed", "Running"]
        [(winner_ns, winner)] = phases["Running"]
        assert len(phases["Failed"]) == 19
        for ns, name in phases["Failed"]:
            status = await wfe_status(kube, name, ns)
            details = status["failureDetails"]
            assert details["reason"] == "ExecutionRaceCondition"
            assert details["message"].startswith("Race condition:")
            assert lock in details["message"]
            assert f"{winner_ns}/{winner}" in details["message"]
            assert "wasExecutionFailure" not in details
            assert "startTime" not in status
            created = condition(status, "TektonPipelineCreated")
            assert (created["status"], created["reason"]) == ("False", "ExecutionRaceCondition")

        [pipelinerun] = await pipelineruns(kube, exec_ns)
        labels = pipelinerun["metadata"]["labels"]
        assert (labels["kubernaut.ai/source-namespace"], labels["kubernaut.ai/workflow-execution"]) == (
            winner_ns,
            winner,
        )
        for ns, name in phases["Failed"]:
            await wait_events(kube, ns, name, "WorkflowFailed")
        assert metrics.delta() == {
            sample(CREATIONS): 1,
            sample(OUTCOMES, outcome="Failed"): 19,
            sample("workflowexecution_reconciler_duration_seconds_count", outcome="Failed"): 19,
            sample("workflowexecution_reconciler_duration_seconds_bucket", outcome="Failed", le="5.0"): 19,
        }
        assert len(audit.of_type("workflow.started")) == 1
        assert len(audit.of_type("workflow.failed")) == 19

        # The losers' cooldown ends while the winner still runs: they release nothing that is not theirs.
        clock.advance(10)
        executor = executor_of(manager)
        for ns, name in phases["Failed"]:
            assert await executor.reconcile(f"{ns}/{name}") == Result.done()
        assert (await kube.get(PipelineRunResource, lock, namespace=exec_ns)).metadata.uid == pipelinerun["metadata"][
            "uid"
        ]
        assert (await wfe_status(kube, winner, winner_ns))["phase"] == "Running"
        assert len(watch.created) == 1
        assert watch.max_alive() == 1


BAD_INPUT = [
    ("wfe-one-part", {"target": "deployment"}, "got 1 parts"),
    ("wfe-four-parts", {"target": "a/b/c/d"}, "got 4 parts"),
    ("wfe-empty-first", {"target": "/Deployment/x"}, "empty part at position 0"),
    ("wfe-empty-middle", {"target": "ns//x"}, "empty part at position 1"),
    ("wfe-empty-last", {"target": "ns/Deployment/"}, "empty part at position 2"),
    ("wfe-long-name", {"target": "ns/Deployment/" + "n" * 300}, "is not a valid object name"),
    ("wfe-long-namespace", {"target": "n" * 300 + "/Deployment/x"}, "is not a valid namespace name"),
    ("wfe-long-kind", {"target": "ns/" + "K" * 300 + "/x"}, "is not a valid kind"),
    ("wfe-no-bundle", {"containerImage": ""}, "workflowRef.containerImage is required"),
    ("wfe-lower-param", {"parameters": {"replicaCount": "3"}}, "'replicaCount' must be UPPER_SNAKE_CASE"),
    ("wfe-dash-param", {"parameters": {"OK": "1", "NOT-OK": "2"}}, "'NOT-OK' must be UPPER_SNAKE_CASE"),
]


async def test_bad_input_fails_before_anything_is_created(kube: AsyncClient, kubeconfig: Path, namespace: str) -> None:
    exec_ns = await create_execution_namespace(kube)
    async with watching_pipelineruns(kube, exec_ns) as watch, running(kubeconfig, settings_for(exec_ns), ("executor",)):
        for name, spec, _ in BAD_INPUT:
            spec = dict(spec)
            target = spec.pop("target", f"{namespace}/Deployment/{name}")
            await create_wfe(kube, name, namespace, target, **spec)
        for name, _, expected in BAD_INPUT:
            status = await wait_phase(kube, name, namespace, "Failed")
            details = status["failureDetails"]
            assert details["reason"] == "ConfigurationError", name
            assert expected in details["message"], (name, details["message"])
            created = condition(status, "TektonPipelineCreated")
            assert (created["status"], created["reason"]) == ("False", "PipelineCreationFailed")
        assert watch.created == []

        # The controller keeps working: valid WFEs still run, including a workflow id no label can hold
        # and a WFE name longer than a label value (the label is shortened, an annotation keeps the name).
        long_name = "wfe-" + "x" * 70
        await create_wfe(kube, "wfe-valid", namespace, f"{namespace}/Deployment/valid")
        await create_wfe(kube, "wfe-odd-id", namespace, f"{namespace}/Deployment/odd", workflowId="Restart Pod/v2")
        await create_wfe(kube, long_name, namespace, f"{namespace}/Deployment/long")
        await wait_phase(kube, "wfe-valid", namespace, "Running")
        await wait_phase(kube, "wfe-odd-id", namespace, "Running")
        await wait_phase(kube, long_name, namespace, "Running")
        assert len(watch.created) == 3


async def test_create_errors_transient_retried_permanent_fail(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    metrics = Metrics()
    async with running(kubeconfig, settings_for(exec_ns), ("executor",)) as manager:
        errors = [
            api_error(500, "InternalError", "etcdserver: request timed out"),
            api_error(429, "TooManyRequests", "too many requests, please try again later"),
        ]
        attempts = fail_pipelinerun_creates(manager, errors)
        await create_wfe(kube, "wfe-transient", namespace, f"{namespace}/Deployment/transient")
        status = await wait_phase(kube, "wfe-transient", namespace, "Running")
        assert len(attempts) == 3
        assert "failureDetails" not in status
        assert metrics.delta() == {sample(CREATIONS): 1}

        # Connection loss is transient too.
        async def connection_lost() -> None:
            raise httpx.ConnectError("connection refused")

        attempts.clear()
        real = manager.client.create
        calls = {"n": 0}

        async def create_once_refused(obj: object, *args: object, **kwargs: object) -> object:
            if isinstance(obj, PipelineRunResource) and calls["n"] == 0:
                calls["n"] += 1
                await connection_lost()
            return await real(obj, *args, **kwargs)

        manager.client.create = create_once_refused  # type: ignore[method-assign]
        await create_wfe(kube, "wfe-offline", namespace, f"{namespace}/Deployment/offline")
        await wait_phase(kube, "wfe-offline", namespace, "Running")
        manager.client.create = real  # type: ignore[method-assign]

        permanent = [
            (
                "wfe-forbidden",
                403,
                "Forbidden",
                "pipelineruns.tekton.dev is forbidden: no RBAC",
                "Forbidden",
                "RBACDenied",
            ),
            (
                "wfe-invalid",
                422,
                "Invalid",
                "PipelineRun is invalid: spec.params",
                "ConfigurationError",
                "PipelineCreationFailed",
            ),
            ("wfe-bad", 400, "BadRequest", "bad request body", "ConfigurationError", "PipelineCreationFailed"),
        ]
        fail_pipelinerun_creates(manager, errors)
        for name, code, api_reason, message, reason, cond_reason in permanent:
            errors.append(api_error(code, api_reason, message))
            await create_wfe(kube, name, namespace, f"{namespace}/Deployment/{name}")
            status = await wait_phase(kube, name, namespace, "Failed")
            details = status["failureDetails"]
            assert (details["reason"], details["message"]) == (reason, f"Failed to create PipelineRun: {message}")
            assert "wasExecutionFailure" not in details
            created = condition(status, "TektonPipelineCreated")
            assert (created["status"], created["reason"]) == ("False", cond_reason)
            assert await wait_events(kube, namespace, name, "WorkflowFailed") == [
                (
                    "Warning",
                    "WorkflowFailed",
                    f"Pre-execution failure: {reason} - Failed to create PipelineRun: {message}",
                )
            ]
        assert errors == []
        assert metrics.delta() == {
            sample(CREATIONS): 2,
            sample(OUTCOMES, outcome="Failed"): 3,
            sample("workflowexecution_reconciler_duration_seconds_count", outcome="Failed"): 3,
            sample("workflowexecution_reconciler_duration_seconds_bucket", outcome="Failed", le="5.0"): 3,
        }
        assert [e for e in await events_for(kube, namespace, "wfe-transient") if e[1] == "WorkflowFailed"] == []

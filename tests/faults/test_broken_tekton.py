"""A broken Tekton: PipelineRun status with missing fields, wrong types and unknown reasons, written
while the executor runs. Each execution gets a clear phase (or keeps waiting, saying so), no pass
crashes or loops, and every run still finishes once Tekton writes a sane status."""

import asyncio
from pathlib import Path
from typing import Any

from lightkube import AsyncClient

from kubernaut.domain.target import build_lock_name
from kubernaut.kube.client import patch_status
from kubernaut.kube.resources import PipelineRunResource, RemediationRequestResource, WorkflowExecutionResource
from tests.faults.passes import counting
from tests.faults.support import deadline, take_snapshot
from tests.integration.harness import create_execution_namespace, eventually, running, settings_for
from tests.integration.rr import rr_manifest, rr_status

NOW = "2025-12-15T10:00:00Z"

# (name, status Tekton writes, the execution's phase then). "Running": it keeps waiting for Tekton.
BROKEN: list[tuple[str, Any, str]] = [
    ("no-conditions", {"startTime": NOW}, "Running"),
    ("conditions-not-a-list", {"conditions": "Succeeded"}, "Running"),
    ("conditions-null", {"conditions": None, "childReferences": None}, "Running"),
    ("condition-not-an-object", {"conditions": ["Succeeded", 7, None]}, "Running"),
    ("condition-without-status", {"conditions": [{"type": "Succeeded"}]}, "Running"),
    ("status-maybe", {"conditions": [{"type": "Succeeded", "status": "Maybe", "reason": "Whatever"}]}, "Running"),
    ("status-boolean", {"conditions": [{"type": "Succeeded", "status": True}]}, "Running"),
    (
        "unknown-reason",
        {"conditions": [{"type": "Succeeded", "status": "Unknown", "reason": "Frobnicating"}]},
        "Running",
    ),
    (
        "wrong-types-everywhere",
        {
            "startTime": 12,
            "completionTime": ["x"],
            "childReferences": "task-1",
            "conditions": [{"type": "Succeeded", "status": "Unknown", "reason": 5, "message": {"a": 1}}],
        },
        "Running",
    ),
    ("true-bare", {"conditions": [{"type": "Succeeded", "status": "True"}]}, "Completed"),
    (
        "true-garbage-times",
        {"conditions": [{"type": "Succeeded", "status": "True", "reason": "Done?"}], "completionTime": "yesterday"},
        "Completed",
    ),
    ("false-bare", {"conditions": [{"type": "Succeeded", "status": "False"}]}, "Failed"),
    (
        "false-wrong-types",
        {
            "startTime": "not a time",
            "conditions": [{"type": "Succeeded", "status": "False", "reason": 42, "message": ["oom", 1]}],
            "childReferences": [
                {"kind": "TaskRun"},
                {"name": 5, "kind": "TaskRun"},
                "x",
                {"name": "gone", "kind": "TaskRun"},
            ],
        },
        "Failed",
    ),
    (
        "false-unknown-reason",
        {
            "conditions": [
                {"type": "Succeeded", "status": "False", "reason": "PipelineRunExploded", "message": "\u2603" * 5000}
            ]
        },
        "Failed",
    ),
]


@deadline()
async def test_broken_pipelinerun_status_never_crashes_or_wedges_the_executor(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)  # no Tekton stand-in here: the test plays Tekton
    settings = settings_for(exec_ns, execution={"cooldown": "1s"})
    async with running(kubeconfig, settings, ("orchestrator", "executor")) as manager:
        with counting(manager) as passes:
            for name, _, _ in BROKEN:
                target = {"kind": "Deployment", "name": name, "namespace": namespace}
                await kube.create(RemediationRequestResource(rr_manifest(name, namespace, target=target)))
            locks = {name: build_lock_name(f"{namespace}/Deployment/{name}") for name, _, _ in BROKEN}

            async def all_running() -> bool:
                snapshot = await take_snapshot(kube, namespace, exec_ns)
                return sum((w.get("status") or {}).get("phase") == "Running" for w in snapshot.wfes) == len(BROKEN)

            await eventually(all_running, timeout=60, what="every execution Running")
            before = {name: passes.of("executor", f"{namespace}/we-{name}") for name, _, _ in BROKEN}
            for name, status, _ in BROKEN:
                await patch_status(kube, PipelineRunResource, locks[name], exec_ns, status)

            async def outcome(name: str) -> str:
                body = (await kube.get(WorkflowExecutionResource, f"we-{name}", namespace=namespace)).to_dict()
                return str((body.get("status") or {}).get("phase"))

            async def decided() -> bool:
                phases = [await outcome(name) for name, _, expected in BROKEN if expected != "Running"]
                return all(phase in ("Completed", "Failed") for phase in phases)

            await eventually(decided, timeout=30, what="terminal statuses mirrored")
            await asyncio.sleep(2)  # time for a hot loop to show in the counts (a quiet executor makes ~1 pass)
            phases = {name: await outcome(name) for name, _, _ in BROKEN}
            assert phases == {name: expected for name, _, expected in BROKEN}
            for name, _, expected in BROKEN:
                wfe = (await kube.get(WorkflowExecutionResource, f"we-{name}", namespace=namespace)).to_dict()
                status = wfe["status"]
                if expected == "Failed":
                    details = status["failureDetails"]
                    assert details["reason"] in ("Unknown", "OOMKilled", "TaskFailed"), details
                    assert isinstance(details["message"], str)
                    assert details["naturalLanguageSummary"]
                if expected == "Running":
                    running_condition = next(c for c in status["conditions"] if c["type"] == "TektonPipelineRunning")
                    assert running_condition["message"], status
                extra = passes.of("executor", f"{namespace}/we-{name}") - before[name]
                assert extra <= 6, f"{name}: {extra} passes after one status write"
            assert passes.crashes() == []
            assert not [k for k, n in passes.failures.items() if n > 0], dict(passes.failures)

            # Tekton comes to its senses: every run still waiting finishes, and its request with it.
            for name, _, expected in BROKEN:
                if expected == "Running":
                    await patch_status(
                        kube,
                        PipelineRunResource,
                        locks[name],
                        exec_ns,
                        {"conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}]},
                    )

            async def requests_done() -> dict[str, str] | None:
                phases = {name: (await rr_status(kube, name, namespace)).get("overallPhase") for name, _, _ in BROKEN}
                return phases if all(p in ("Completed", "Failed") for p in phases.values()) else None

            final = await eventually(requests_done, timeout=30, what="every request finished")
            assert final == {name: "Failed" if expected == "Failed" else "Completed" for name, _, expected in BROKEN}

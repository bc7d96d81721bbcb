"""A burst of requests for one target: one execution at a time, every request served once.

Fifty requests for different signals on the same Deployment are created at once. Watches on the
requests, the executions and the PipelineRuns record everything that happens; the invariants are
checked over the whole recording, not only at the end.
"""

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from lightkube import AsyncClient

from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.kube.resources import PipelineRunResource, RemediationRequestResource, WorkflowExecutionResource
from tests.integration.harness import create_execution_namespace, eventually, running, settings_for
from tests.integration.orchestrator_support import (
    Recorded,
    create_rr,
    reconciles,
    recording,
    rfc3339,
    set_rr_status,
    wfes,
)
from tests.integration.rr import rr_manifest, rr_status
from tests.integration.tekton_support import played

pytestmark = pytest.mark.tekton

BURST = 50


def max_running_at_once(executions: Recorded) -> int:
    """The most executions that were Running at the same moment, replaying the watch in order."""
    running_now: set[str] = set()
    most = 0
    for type_, name, _, body in executions.events:
        phase = (body.get("status") or {}).get("phase")
        if type_ != "DELETED" and phase == "Running":
            running_now.add(name)
        else:
            running_now.discard(name)
        most = max(most, len(running_now))
    return most


def block_reasons(requests: Recorded) -> Counter[str]:
    return Counter(
        (body.get("status") or {}).get("blockReason", "")
        for _, _, _, body in requests.events
        if (body.get("status") or {}).get("overallPhase") == "Blocked"
    )


async def test_burst_on_one_target_runs_one_at_a_time_and_completes_all(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit = MemoryAuditSink()
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    settings = settings_for(exec_ns, execution={"cooldown": "500ms"}, routing={"recentlyRemediatedCooldown": "0s"})
    names = [f"rr-{index:02d}" for index in range(BURST)]
    async with (
        recording(kube, RemediationRequestResource, namespace) as requests,
        recording(kube, WorkflowExecutionResource, namespace) as executions,
        recording(kube, PipelineRunResource, exec_ns) as runs,
        running(kubeconfig, settings, ("orchestrator", "executor"), audit=audit),
    ):
        started, before = time.monotonic(), reconciles(namespace)
        await asyncio.gather(
            *(
                kube.create(
                    RemediationRequestResource(
                        rr_manifest(name, namespace, target=target, bundle=played("succeed:1tasks-0s"))
                    )
                )
                for name in names
            )
        )

        async def all_ended() -> dict[str, Any] | None:
            phases = {
                rr.metadata.name: (rr.to_dict().get("status") or {}).get("overallPhase")
                async for rr in kube.list(RemediationRequestResource, namespace=namespace)
            }
            ended = all(phase in ("Completed", "Failed", "TimedOut") for phase in phases.values())
            return phases if len(phases) == BURST and ended else None

        phases = await eventually(all_ended, timeout=270, interval=0.5, what="every request ended")
        elapsed = time.monotonic() - started

        async def last_lock_released() -> bool:
            return sum(1 for type_, *_ in runs.events if type_ == "DELETED") == BURST

        await eventually(last_lock_released, what="the last lock released")
    blocks = len(audit.of_type("orchestrator.routing.blocked"))
    print(
        f"\n{BURST} requests on one target ended in {elapsed:.1f}s: {reconciles(namespace) - before:.0f} reconciles, "
        f"{blocks} blocks, {len(requests.events)} request events"
    )

    assert Counter(phases.values()) == Counter({"Completed": BURST})
    # Each request got exactly one execution, created once, and it ran once.
    assert sorted(executions.created()) == sorted(f"we-{name}" for name in names)
    assert max_running_at_once(executions) == 1
    failed = [name for _, name, _, body in executions.events if (body.get("status") or {}).get("phase") == "Failed"]
    assert failed == []
    # One PipelineRun per execution, one at a time: each was deleted before the next was created.
    assert len(runs.uids()) == BURST
    sequence = [type_ for type_, *_ in runs.events if type_ in ("ADDED", "DELETED")]
    assert sequence == ["ADDED", "DELETED"] * BURST
    # While a request waited, it waited for the busy target and nothing else.
    assert set(block_reasons(requests)) <= {"ResourceBusy"}
    for name in names:
        assert len(audit.of_type("orchestrator.lifecycle.completed", name)) == 1
        assert len(audit.of_type("orchestrator.lifecycle.started", name)) == 1


async def test_requests_analysed_at_the_same_moment_get_one_execution_between_them(
    kube: AsyncClient, kubeconfig: Path, namespace: str
) -> None:
    """Several requests reach workflow creation together (as after a restart): only one may create."""
    exec_ns = await create_execution_namespace(kube)
    target = {"kind": "Deployment", "name": "api", "namespace": namespace}
    now = rfc3339(datetime.now(UTC))
    names = [f"rr-{index}" for index in range(8)]
    for name in names:
        await create_rr(kube, rr_manifest(name, namespace, target=target))
        await set_rr_status(
            kube,
            name,
            namespace,
            {"overallPhase": "Analyzing", "startTime": now, "analyzingStartTime": now, "transitionCount": 2},
        )
    async with running(kubeconfig, settings_for(exec_ns), ("orchestrator",)):

        async def settled() -> dict[str, str] | None:
            phases = {name: (await rr_status(kube, name, namespace)).get("overallPhase", "") for name in names}
            return phases if "Analyzing" not in phases.values() else None

        phases = await eventually(settled, what="every request routed")
        created = [w["metadata"]["name"] for w in await wfes(kube, namespace)]
    assert len(created) == 1, created
    assert Counter(phases.values()) == Counter({"Executing": 1, "Blocked": len(names) - 1})

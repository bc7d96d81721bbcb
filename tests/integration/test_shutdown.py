"""SIGTERM to `kubernaut run` while remediations are in flight: it exits within the grace period with
the audit trail flushed and the Lease released; a restart finishes every remediation with no side
effect done twice. And it keeps its deadline when the API server is gone."""

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path

from kubernaut.kube.resources import RemediationRequestResource, WorkflowExecutionResource
from tests.integration.harness import eventually
from tests.integration.operator_process import (
    OperatorProcess,
    ProductionCluster,
    cluster,
    count_pipelinerun_creations,
    holder,
    write_config,
)
from tests.integration.rr import rr_manifest
from tests.integration.tekton_support import played

__all__ = ["cluster"]  # the fixture, imported for pytest

GRACE_SECONDS = 10.0
REMEDIATIONS = 20


def events_by_transition(db: Path) -> Counter[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return Counter(conn.execute("SELECT event_type, resource_id FROM audit_events"))


async def phases(cluster: ProductionCluster, namespace: str) -> Counter[str]:
    found: Counter[str] = Counter()
    async for rr in cluster.admin.list(RemediationRequestResource, namespace=namespace):
        found[(rr.to_dict().get("status") or {}).get("overallPhase") or "New"] += 1
    return found


async def test_sigterm_mid_flight_then_restart_finishes_everything_once(
    cluster: ProductionCluster, tmp_path: Path
) -> None:
    namespace = await cluster.namespace("shutdown")
    kubeconfigs = {c: await cluster.kubeconfig_for(c) for c in ("orchestrator", "executor")}
    configs = {
        c: write_config(tmp_path / f"{c}.yaml", audit_db=tmp_path / f"{c}.db", grace=f"{GRACE_SECONDS:.0f}s")
        for c in kubeconfigs
    }

    def process(controller: str, run: int) -> OperatorProcess:
        return OperatorProcess(
            f"{controller}-{run}",
            kubeconfigs[controller],
            configs[controller],
            controller,
            tmp_path / f"{controller}.log",
        )

    seen: Counter[str] = Counter()
    watch_stop = asyncio.Event()
    watcher = asyncio.create_task(count_pipelinerun_creations(cluster.admin, seen, watch_stop))
    first = [process("orchestrator", 1), process("executor", 1)]
    second: list[OperatorProcess] = []
    try:
        for proc in first:
            await proc.start().wait_ready()
        for i in range(REMEDIATIONS):
            target = {"kind": "Deployment", "name": f"svc-{i}", "namespace": namespace}
            body = rr_manifest(f"rr-{i}", namespace, target=target, bundle=played("succeed:1tasks-3s"))
            await cluster.admin.create(RemediationRequestResource(body))

        async def mid_flight() -> Counter[str] | None:
            found = await phases(cluster, namespace)
            return found if found["Executing"] >= 5 else None

        before = await eventually(mid_flight, timeout=180, interval=0.1, what="5 remediations executing")
        assert before["Completed"] < REMEDIATIONS

        sent = time.monotonic()
        for proc in first:
            proc.signal(signal.SIGTERM)
        codes = [await proc.wait_exit(GRACE_SECONDS + 5) for proc in first]
        took = time.monotonic() - sent
        assert codes == [0, 0], [p.log()[-2000:] for p in first]
        assert took < GRACE_SECONDS, took
        assert await holder(cluster, "kubernaut-orchestrator") == ""
        assert await holder(cluster, "kubernaut-executor") == ""
        left = await phases(cluster, namespace)
        assert left["Completed"] < REMEDIATIONS, "the stop must leave work for the restart"

        second = [process("orchestrator", 2), process("executor", 2)]
        for proc in second:
            await proc.start().wait_ready()

        async def all_completed() -> bool:
            return (await phases(cluster, namespace))["Completed"] == REMEDIATIONS

        await eventually(all_completed, timeout=300, interval=0.3, what="every remediation completed")
        for proc in second:
            proc.signal(signal.SIGTERM)
        assert [await proc.wait_exit(GRACE_SECONDS + 5) for proc in second] == [0, 0]
    finally:
        for proc in [*first, *second]:
            proc.stop_now()
        watch_stop.set()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    wfes = [w.to_dict() async for w in cluster.admin.list(WorkflowExecutionResource, namespace=namespace)]
    assert sorted(w["metadata"]["name"] for w in wfes) == sorted(f"we-rr-{i}" for i in range(REMEDIATIONS))
    assert {w["status"]["phase"] for w in wfes} == {"Completed"}
    runs = [w["status"]["pipelineRunRef"]["name"] for w in wfes]
    assert [seen[name] for name in runs] == [1] * REMEDIATIONS, "a PipelineRun was created twice"

    # The audit trail of both runs is in the stores (flushed at each stop), each transition once.
    orchestrator = events_by_transition(tmp_path / "orchestrator.db")
    executor = events_by_transition(tmp_path / "executor.db")
    for i in range(REMEDIATIONS):
        assert orchestrator[("orchestrator.lifecycle.started", f"rr-{i}")] == 1
        assert orchestrator[("orchestrator.lifecycle.completed", f"rr-{i}")] == 1
        assert executor[("workflow.started", f"we-rr-{i}")] == 1
        assert executor[("workflow.completed", f"we-rr-{i}")] == 1
    assert "Released Lease kubernaut-system/kubernaut-executor" in (tmp_path / "executor.log").read_text()


async def test_the_grace_period_holds_when_the_api_server_is_gone(cluster: ProductionCluster, tmp_path: Path) -> None:
    """No Lease release, no watch to stop cleanly: the process still exits within the grace period."""
    config = write_config(tmp_path / "executor.yaml", audit_db=tmp_path / "executor.db", grace="6s")
    proc = OperatorProcess(
        "executor-x", await cluster.kubeconfig_for("executor"), config, "executor", tmp_path / "executor.log"
    )
    outage: asyncio.Future[None] | None = None
    try:
        await proc.start().wait_ready()

        async def leading() -> bool:
            return await proc.metric_sum("kubernaut_leader_election_is_leader") == 1

        await eventually(leading, timeout=60, what="executor-x leading")
        outage = asyncio.ensure_future(asyncio.to_thread(cluster.plane.restart_apiserver, 10.0))
        await asyncio.sleep(0.5)  # the API server is stopping; its restart waits 10s
        sent = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = await proc.wait_exit(15)
        print("grace test", code, time.monotonic() - sent, proc.log()[-2500:])
        assert time.monotonic() - sent < 6.5
    finally:
        proc.stop_now()
        if outage is not None:
            await outage

"""Two replicas of each controller as real `kubernaut run` processes, as their ServiceAccounts with
the shipped RBAC: only the Lease holder reconciles; after kill -9 of the leaders the standbys take
over within the lease duration and finish every remediation without a duplicate WFE or PipelineRun;
SIGTERM hands the Lease over at once."""

import asyncio
import contextlib
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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

# Long enough that a leader starved of CPU on a busy 2-core machine still renews in time.
LEASE_SECONDS, RETRY_SECONDS = 8.0, 0.5
LEASE = ("8s", "6s", "500ms")
REMEDIATIONS = 50


async def wait_holder(cluster: ProductionCluster, lease: str, prefix: str, timeout: float = 60.0) -> float:
    """Seconds until `prefix`'s replica holds the Lease."""
    started = time.monotonic()

    async def held() -> bool:
        return (await holder(cluster, lease)).startswith(f"{prefix}_")

    await eventually(held, timeout=timeout, interval=0.05, what=f"{prefix} holding {lease}")
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def replicas(
    cluster: ProductionCluster, directory: Path, names: dict[str, str], **config: Any
) -> AsyncIterator[dict[str, OperatorProcess]]:
    """Processes by name (name -> controller), each with its own config and SQLite audit store."""
    processes: dict[str, OperatorProcess] = {}
    try:
        for name, controller in names.items():
            path = write_config(directory / f"{name}.yaml", audit_db=directory / f"{name}.db", **config)
            processes[name] = OperatorProcess(
                name, await cluster.kubeconfig_for(controller), path, controller, directory / f"{name}.log"
            )
        yield processes
    finally:
        for process in processes.values():
            process.stop_now()


def audit_events(db: Path) -> list[tuple[str, str, str]]:
    """(event_id, event_type, resource_id) of a replica's audit store."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return list(conn.execute("SELECT event_id, event_type, resource_id FROM audit_events"))


async def test_only_the_leader_reconciles_and_a_standby_finishes_after_kill_9(
    cluster: ProductionCluster, tmp_path: Path
) -> None:
    namespace = await cluster.namespace("leader")
    names = {"ro-a": "orchestrator", "we-a": "executor", "ro-b": "orchestrator", "we-b": "executor"}
    seen: Counter[str] = Counter()
    watch_stop = asyncio.Event()
    watcher = asyncio.create_task(count_pipelinerun_creations(cluster.admin, seen, watch_stop))
    async with replicas(cluster, tmp_path, names, lease=LEASE) as procs:
        # The a-replicas start first and lead; the b-replicas are warm standbys.
        for name in ("ro-a", "we-a"):
            await procs[name].start().wait_ready()
        await wait_holder(cluster, "kubernaut-orchestrator", "ro-a")
        await wait_holder(cluster, "kubernaut-executor", "we-a")
        for name in ("ro-b", "we-b"):
            await procs[name].start().wait_ready()

        for i in range(REMEDIATIONS):
            target = {"kind": "Deployment", "name": f"app-{i}", "namespace": namespace}
            body = rr_manifest(f"rr-{i}", namespace, target=target, bundle=played("succeed:1tasks-2s"))
            await cluster.admin.create(RemediationRequestResource(body))

        async def phases() -> Counter[str]:
            found: Counter[str] = Counter()
            async for rr in cluster.admin.list(RemediationRequestResource, namespace=namespace):
                found[(rr.to_dict().get("status") or {}).get("overallPhase") or "New"] += 1
            return found

        async def some_completed() -> bool:
            return (await phases())["Completed"] >= 10

        await eventually(some_completed, timeout=180, interval=0.2, what="10 remediations completed")

        # Only the leaders reconciled; the standbys watched (their caches are warm) and did nothing.
        # (A leader that missed its renew deadline exits: then this run cannot show it, and says so.)
        for name in ("ro-a", "we-a"):
            popen = procs[name].popen
            assert popen is not None
            assert popen.poll() is None, f"{name} exited before the standbys were checked:\n{procs[name].log()[-3000:]}"
        assert await procs["ro-a"].metric_sum("kubernaut_remediationorchestrator_reconcile_total") > 0
        assert await procs["we-a"].metric_sum("workflowexecution_reconciler_pipelinerun_creations_total") > 0
        assert await procs["ro-b"].metric_sum("kubernaut_remediationorchestrator_reconcile_total") == 0
        assert await procs["we-b"].metric_sum("workflowexecution_reconciler_pipelinerun_creations_total") == 0
        assert await procs["ro-b"].metric_sum("kubernaut_leader_election_is_leader") == 0
        assert audit_events(tmp_path / "ro-b.db") == []
        in_flight = await phases()
        assert in_flight["Completed"] < REMEDIATIONS, "the leaders must die with work left"

        # kill -9 both leaders mid-flight: no release, the Leases expire by themselves.
        procs["ro-a"].signal(signal.SIGKILL)
        procs["we-a"].signal(signal.SIGKILL)
        killed = time.monotonic()
        await procs["ro-a"].wait_exit(10)
        await procs["we-a"].wait_exit(10)
        await wait_holder(cluster, "kubernaut-orchestrator", "ro-b")
        await wait_holder(cluster, "kubernaut-executor", "we-b")
        takeover = time.monotonic() - killed
        # A standby counts the lease duration from the last renewal it saw (at most a retry period after
        # it happened) and tries every retry period (plus jitter); the rest is slack for a busy machine.
        assert takeover <= LEASE_SECONDS + 2 * RETRY_SECONDS * 1.2 + 2.0, takeover

        async def all_completed() -> Counter[str] | None:
            found = await phases()
            return found if found["Completed"] == REMEDIATIONS else None

        await eventually(all_completed, timeout=300, interval=0.5, what="every remediation completed")
        assert await procs["ro-b"].metric_sum("kubernaut_remediationorchestrator_reconcile_total") > 0

        # Exactly one WFE per request and one PipelineRun per WFE, none failed as a race.
        wfes = [w.to_dict() async for w in cluster.admin.list(WorkflowExecutionResource, namespace=namespace)]
        assert sorted(w["metadata"]["name"] for w in wfes) == sorted(f"we-rr-{i}" for i in range(REMEDIATIONS))
        assert {w["status"]["phase"] for w in wfes} == {"Completed"}
        runs = {w["status"]["pipelineRunRef"]["name"] for w in wfes}
        assert len(runs) == REMEDIATIONS
        assert {name: seen[name] for name in runs} == dict.fromkeys(runs, 1), "a PipelineRun was created twice"

        # A start recorded twice (by the dead leader, then by its successor) has the same event id.
        started = {
            (event_id, resource)
            for name in ("ro-a", "ro-b")
            for event_id, kind, resource in audit_events(tmp_path / f"{name}.db")
            if kind == "orchestrator.lifecycle.started"
        }
        assert started
        assert max(Counter(resource for _, resource in started).values()) == 1
        for name in ("ro-b", "we-b"):
            procs[name].signal(signal.SIGTERM)
            assert await procs[name].wait_exit(15) == 0
    watch_stop.set()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    assert await holder(cluster, "kubernaut-orchestrator") == ""
    assert await holder(cluster, "kubernaut-executor") == ""


async def test_sigterm_hands_the_lease_over_at_once(cluster: ProductionCluster, tmp_path: Path) -> None:
    """With a 15s lease, a released Lease is taken at the standby's next try, not 15s later."""
    names = {"we-c": "executor", "we-d": "executor"}
    async with replicas(cluster, tmp_path, names, lease=("15s", "10s", "500ms")) as procs:
        await procs["we-c"].start().wait_ready()
        await wait_holder(cluster, "kubernaut-executor", "we-c")
        await procs["we-d"].start().wait_ready()
        assert (await holder(cluster, "kubernaut-executor")).startswith("we-c_")

        procs["we-c"].signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert await procs["we-c"].wait_exit(15) == 0
        await wait_holder(cluster, "kubernaut-executor", "we-d", timeout=15)
        assert time.monotonic() - stopped < 3.0
        assert await procs["we-d"].metric_sum("kubernaut_leader_election_is_leader") == 1
        lease = await cluster.lease("kubernaut-executor")
        assert lease is not None
        assert lease["spec"]["leaseTransitions"] >= 1

        procs["we-d"].signal(signal.SIGTERM)
        assert await procs["we-d"].wait_exit(15) == 0
    assert await holder(cluster, "kubernaut-executor") == ""

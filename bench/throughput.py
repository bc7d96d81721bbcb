"""Remediations per second: the system end to end against the physical limit of the API server.

    .venv/bin/python -m bench.throughput [--n 100] [--repeats 1] [--rate 10 --seconds 15]

Physical limit (the baseline): one plain async lightkube client performs only the writes one
remediation cannot do without, as fast as the local API server accepts them, with as many
remediations in flight as the controllers have reconcile workers (8 + 8):

    1 RR status -> Executing    (the request says what runs; nothing else tells a user)
    2 WFE create                (the execution record, owned by the request)
    3 WFE status -> Running     (the PipelineRun reference, the start time)
    4 PipelineRun create        (the workflow itself, and the lock on the target)
    5 PipelineRun status        (Tekton reports success)
    6 WFE status -> Completed   (the outcome)
    7 RR status -> Completed    (the request's outcome)
    8 PipelineRun delete        (the lock released)

The system: `kubernaut run --controllers orchestrator,executor` and Tekton's part played as in the
baseline (every new PipelineRun succeeds in one status write), each a process with its own
identity; N RemediationRequests (distinct targets and fingerprints) are created at once. Both runs
are timed from the first RR created to the last RR Completed, as the bench's own watch sees it; the
API server's audit log counts every request by identity.
"""

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.types import PatchType, on_error_retry

from bench.common import (
    BENCH_USER,
    BUNDLE,
    CONTROLLERS_USER,
    TEKTON_USER,
    AuditRecord,
    BenchPlane,
    CpuMeter,
    Figures,
    count_requests,
    describe_machine,
    fetch_apiserver_version,
    percentile,
    prepare_cluster,
    start_controllers,
    start_tekton,
    succeeded_status,
)
from kubernaut.domain.target import build_lock_name
from kubernaut.kube.resources import PipelineRunResource, RemediationRequestResource, WorkflowExecutionResource

RR_NS = "bench-rr"
BASE_NS = "bench-baseline"
EXEC_NS = "bench-exec"
PACED_NS = "bench-paced"
BASELINE_CONCURRENCY = 16  # the controllers' reconcile workers: 8 orchestrator + 8 executor
CREATE_CONCURRENCY = 32
MINIMUM_WRITES = 8


def build_rr(name: str, namespace: str, seed: str, bundle: str = BUNDLE) -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "signalFingerprint": hashlib.sha256(f"{seed}/{namespace}/{name}".encode()).hexdigest(),
            "signalName": "KubePodCrashLooping",
            "severity": "critical",
            "targetResource": {"kind": "Deployment", "name": f"app-{name}", "namespace": namespace},
            "workflowRef": {"workflowId": "restart-deployment", "version": "1.0.0", "containerImage": bundle},
        },
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Timeline:
    """When the bench's watches saw each request appear, each PipelineRun appear, each request finish."""

    rr_added: dict[str, float] = field(default_factory=dict)
    rr_done: dict[str, float] = field(default_factory=dict)
    rr_phase: dict[str, str] = field(default_factory=dict)
    pr_added: dict[str, float] = field(default_factory=dict)
    pr_done: dict[str, float] = field(default_factory=dict)
    pr_deleted: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def latencies(self) -> list[float]:
        """RR created -> its PipelineRun created."""
        return [self.pr_added[n] - self.rr_added[n] for n in self.pr_added if n in self.rr_added]

    def durations(self) -> list[float]:
        """RR created -> RR finished."""
        return [self.rr_done[n] - self.rr_added[n] for n in self.rr_done if n in self.rr_added]

    def spans(self) -> dict[str, list[float]]:
        """Each finished request's time split where its PipelineRun appeared and where it finished."""
        names = [n for n in self.rr_done if n in self.rr_added and n in self.pr_added and n in self.pr_done]
        return {
            "RR created -> PipelineRun created": [self.pr_added[n] - self.rr_added[n] for n in names],
            "PipelineRun created -> finished": [self.pr_done[n] - self.pr_added[n] for n in names],
            "PipelineRun finished -> RR Completed": [self.rr_done[n] - self.pr_done[n] for n in names],
        }


async def _watch(client: AsyncClient, resource: Any, namespace: str, on_event: Any) -> None:
    listing = client.list(resource, namespace=namespace)
    async for _ in listing:
        pass
    async for event, obj in client.watch(
        resource, namespace=namespace, resource_version=listing.resourceVersion, on_error=on_error_retry
    ):
        on_event(event, obj.to_dict() if hasattr(obj, "to_dict") else dict(obj))


def start_watches(client: AsyncClient, rr_namespace: str, timeline: Timeline) -> list[asyncio.Task[None]]:
    def on_rr(event: str, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        now = time.monotonic()
        timeline.rr_added.setdefault(name, now)
        phase = (body.get("status") or {}).get("overallPhase") or ""
        timeline.rr_phase[name] = phase
        if phase in ("Completed", "Failed", "TimedOut", "Skipped", "Cancelled") and name not in timeline.rr_done:
            timeline.rr_done[name] = now
            timeline.changed.set()

    def on_pr(event: str, body: dict[str, Any]) -> None:
        labels = body["metadata"].get("labels") or {}
        wfe = labels.get("kubernaut.ai/workflow-execution", "")
        if labels.get("kubernaut.ai/source-namespace") != rr_namespace or not wfe.startswith("we-"):
            return
        name = wfe[3:]
        timeline.pr_added.setdefault(name, time.monotonic())
        conditions = (body.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Succeeded" and c.get("status") in ("True", "False") for c in conditions):
            timeline.pr_done.setdefault(name, time.monotonic())
        if event == "DELETED":
            timeline.pr_deleted.add(name)
            timeline.changed.set()

    return [
        asyncio.create_task(_watch(client, RemediationRequestResource, rr_namespace, on_rr)),
        asyncio.create_task(_watch(client, PipelineRunResource, EXEC_NS, on_pr)),
    ]


async def wait_for(timeline: Timeline, ready: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        timeline.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(timeline.changed.wait(), min(1.0, remaining))


async def create_rrs(
    client: AsyncClient, names: list[str], namespace: str, seed: str, bundle: str = BUNDLE
) -> list[dict[str, Any]]:
    semaphore = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one(name: str) -> dict[str, Any]:
        async with semaphore:
            created = await client.create(RemediationRequestResource(build_rr(name, namespace, seed, bundle)))
            return dict(created.to_dict())

    return await asyncio.gather(*(one(n) for n in names))


# -- the physical limit ------------------------------------------------------------------------------


async def remediate_minimally(client: AsyncClient, rr: dict[str, Any]) -> None:
    """The 8 writes of one remediation, with bodies shaped like the controllers' own."""
    meta = rr["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    target = f"{namespace}/Deployment/app-{name}"
    wfe_name, lock = f"we-{name}", build_lock_name(target)
    workflow = rr["spec"]["workflowRef"]
    await client.patch(
        RemediationRequestResource.Status,
        name,
        {
            "status": {
                "overallPhase": "Executing",
                "startTime": _now(),
                "workflowExecutionRef": {
                    "apiVersion": "kubernaut.ai/v1alpha1",
                    "kind": "WorkflowExecution",
                    "name": wfe_name,
                    "namespace": namespace,
                },
            }
        },
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    owner = {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    wfe = await client.create(
        WorkflowExecutionResource(
            {
                "apiVersion": "kubernaut.ai/v1alpha1",
                "kind": "WorkflowExecution",
                "metadata": {
                    "name": wfe_name,
                    "namespace": namespace,
                    "ownerReferences": [owner],
                    "labels": {"kubernaut.ai/remediation-request": name},
                },
                "spec": {
                    "remediationRequestRef": {
                        "apiVersion": "kubernaut.ai/v1alpha1",
                        "kind": "RemediationRequest",
                        "name": name,
                        "namespace": namespace,
                        "uid": uid,
                    },
                    "workflowRef": workflow,
                    "targetResource": target,
                },
            }
        )
    )
    await client.patch(
        WorkflowExecutionResource.Status,
        wfe_name,
        {"status": {"phase": "Running", "startTime": _now(), "pipelineRunRef": {"name": lock}}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    await client.create(
        PipelineRunResource(
            {
                "apiVersion": "tekton.dev/v1",
                "kind": "PipelineRun",
                "metadata": {
                    "name": lock,
                    "namespace": EXEC_NS,
                    "labels": {
                        "kubernaut.ai/workflow-execution": wfe_name,
                        "kubernaut.ai/source-namespace": namespace,
                        "kubernaut.ai/workflow-id": workflow["workflowId"],
                    },
                    "annotations": {"kubernaut.ai/target-resource": target},
                },
                "spec": {
                    "pipelineRef": {
                        "resolver": "bundles",
                        "params": [
                            {"name": "bundle", "value": workflow["containerImage"]},
                            {"name": "name", "value": "workflow"},
                            {"name": "kind", "value": "pipeline"},
                        ],
                    },
                    "params": [{"name": "TARGET_RESOURCE", "value": target}],
                    "taskRunTemplate": {"serviceAccountName": "kubernaut-workflow-runner"},
                },
            }
        )
    )
    await client.patch(
        PipelineRunResource.Status, lock, succeeded_status(), namespace=EXEC_NS, patch_type=PatchType.MERGE
    )
    await client.patch(
        WorkflowExecutionResource.Status,
        wfe.metadata.name,
        {"status": {"phase": "Completed", "completionTime": _now(), "duration": "0s"}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    await client.patch(
        RemediationRequestResource.Status,
        name,
        {"status": {"overallPhase": "Completed", "outcome": "Remediated", "completedAt": _now()}},
        namespace=namespace,
        patch_type=PatchType.MERGE,
    )
    await client.delete(PipelineRunResource, lock, namespace=EXEC_NS)


@dataclass
class RunResult:
    n: int
    seconds: float
    per_second: float
    latencies: list[float]
    requests: Counter[str]
    others: dict[str, Counter[str]]
    cpu: dict[str, float]


async def run_baseline(plane: BenchPlane, client: AsyncClient, n: int, seed: str) -> RunResult:
    timeline = Timeline()
    watches = start_watches(client, BASE_NS, timeline)
    await asyncio.sleep(0.5)  # let the watches start before the first create
    offset = plane.audit_offset()
    cpu = CpuMeter({**plane.pids(), "bench": os.getpid()})
    cpu.start()
    names = [f"rr-{i:05d}" for i in range(n)]
    semaphore = asyncio.Semaphore(BASELINE_CONCURRENCY)
    started = time.monotonic()

    async def one(rr: dict[str, Any]) -> None:
        async with semaphore:
            await remediate_minimally(client, rr)

    async def create_and_remediate() -> None:
        # Creation and remediation overlap as in the system: each remediation starts once its RR exists.
        creates = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def create_then_run(name: str) -> None:
            async with creates:
                created = await client.create(RemediationRequestResource(build_rr(name, BASE_NS, seed)))
            await one(created.to_dict())

        await asyncio.gather(*(create_then_run(name) for name in names))

    await create_and_remediate()
    await wait_for(timeline, lambda: len(timeline.rr_done) >= n, 60, "baseline requests Completed")
    seconds = max(timeline.rr_done.values()) - started
    cpu_used = cpu.stop()
    end = await plane.settle_audit()
    records = plane.read_audit(offset, end)
    for task in watches:
        task.cancel()
    return RunResult(n, seconds, n / seconds, timeline.latencies(), count_requests(records, BENCH_USER), {}, cpu_used)


async def delete_baseline(client: AsyncClient) -> None:
    for resource in (RemediationRequestResource, WorkflowExecutionResource):
        await client.deletecollection(resource, namespace=BASE_NS)


# -- the system --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    timeline: Timeline
    seconds: float  # first request created to the last one Completed
    cpu: dict[str, float]  # CPU seconds per process over those seconds
    records: list[AuditRecord]  # the API server's audit records until the locks were released


async def run_burst(
    plane: BenchPlane,
    client: AsyncClient,
    n: int,
    namespace: str,
    seed: str,
    pids: dict[str, int],
    *,
    bundle: str = BUNDLE,
    seconds_per_request: float = 0.5,
) -> Burst:
    """n requests created at once, timed as the bench's own watch sees them complete, then their
    locks released: those requests belong to the remediation too."""
    timeline = Timeline()
    watches = start_watches(client, namespace, timeline)
    try:
        await asyncio.sleep(0.5)
        offset = plane.audit_offset()
        cpu = CpuMeter({**plane.pids(), **pids, "bench": os.getpid()})
        cpu.start()
        started = time.monotonic()
        await create_rrs(client, [f"rr-{i:05d}" for i in range(n)], namespace, seed, bundle=bundle)
        timeout = 120 + n * seconds_per_request
        await wait_for(timeline, lambda: len(timeline.rr_done) >= n, timeout, "requests Completed")
        seconds = max(timeline.rr_done.values()) - started
        used = cpu.stop()
        failed = {name: phase for name, phase in timeline.rr_phase.items() if phase != "Completed"}
        if failed:
            raise RuntimeError(f"{len(failed)} requests did not complete: e.g. {list(failed.items())[:3]}")
        await wait_for(timeline, lambda: len(timeline.pr_deleted) >= n, 120, "locks released")
        records = plane.read_audit(offset, await plane.settle_audit(quiet=1.5))
    finally:
        for task in watches:
            task.cancel()
    return Burst(timeline, seconds, used, records)


async def run_system(plane: BenchPlane, client: AsyncClient, n: int, seed: str, pids: dict[str, int]) -> RunResult:
    burst = await run_burst(plane, client, n, RR_NS, seed, pids)
    others = {user: count_requests(burst.records, user) for user in (TEKTON_USER,)}
    return RunResult(
        n,
        burst.seconds,
        n / burst.seconds,
        burst.timeline.latencies(),
        count_requests(burst.records, CONTROLLERS_USER),
        others,
        burst.cpu,
    )


async def run_paced(client: AsyncClient, rate: float, seconds: float, seed: str, bundle: str = BUNDLE) -> Timeline:
    """RRs created at a steady `rate` per second, until each has its PipelineRun and is done."""
    timeline = Timeline()
    watches = start_watches(client, PACED_NS, timeline)
    await asyncio.sleep(0.5)
    count = int(rate * seconds)
    started = time.monotonic()
    tasks = []
    for i in range(count):
        delay = started + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        rr = build_rr(f"p-{i:05d}", PACED_NS, seed, bundle)
        tasks.append(asyncio.create_task(client.create(RemediationRequestResource(rr))))
    await asyncio.gather(*tasks)
    try:
        await wait_for(timeline, lambda: len(timeline.pr_added) >= count, 60 + count, "paced PipelineRuns created")
        await wait_for(timeline, lambda: len(timeline.rr_done) >= count, 60 + count * 2, "paced requests done")
    finally:
        for task in watches:
            task.cancel()
    return timeline


def format_requests(counter: Counter[str], n: int) -> dict[str, float]:
    return {key: round(value / n, 2) for key, value in sorted(counter.items(), key=lambda kv: -kv[1])}


async def measure(
    figures: Figures,
    details: dict[str, Any],
    n: int,
    *,
    run_index: int,
    paced: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One baseline and one system run of size n on a fresh control plane."""
    seed = f"{run_index}-{time.time_ns()}"
    with tempfile.TemporaryDirectory(prefix="kubernaut-bench-") as tmp:
        plane = BenchPlane(Path(tmp))
        await asyncio.to_thread(plane.start)
        controllers = tekton = None
        try:
            client = await prepare_cluster(plane, [RR_NS, BASE_NS, EXEC_NS, PACED_NS])
            details.setdefault("machine", describe_machine(await fetch_apiserver_version(plane)))
            baseline = await run_baseline(plane, client, n, seed)
            await delete_baseline(client)
            controllers = start_controllers(plane, EXEC_NS)
            tekton = start_tekton(plane, EXEC_NS)
            await controllers.wait_ready()
            pids = {"controllers": controllers.process.pid, "tekton": tekton.pid}
            system = await run_system(plane, client, n, seed, pids)
            latencies = sorted(system.latencies)
            ratio = system.per_second / baseline.per_second
            per_rr = sum(system.requests.values()) / n
            baseline_per_rr = sum(baseline.requests.values()) / n - 1  # minus the RR create
            figures.add(f"baseline remediations/s (N={n})", "1/s", baseline.per_second)
            figures.add(f"system remediations/s (N={n})", "1/s", system.per_second)
            figures.add(f"system / baseline (N={n})", "ratio", ratio)
            figures.add(f"controller API requests per remediation (N={n})", "requests", per_rr)
            figures.add(f"controller requests / minimum writes (N={n})", "ratio", per_rr / MINIMUM_WRITES)
            figures.add(f"RR created -> PipelineRun created p50 (burst N={n})", "s", percentile(latencies, 0.5))
            figures.add(f"RR created -> PipelineRun created p99 (burst N={n})", "s", percentile(latencies, 0.99))
            throttled = await controllers.metric("kubernaut_client_throttle_seconds_total")
            run: dict[str, Any] = {
                "n": n,
                "baseline_seconds": round(baseline.seconds, 3),
                "system_seconds": round(system.seconds, 3),
                "baseline_writes_per_remediation": round(baseline_per_rr, 2),
                "controller_requests_per_remediation": format_requests(system.requests, n),
                "tekton_requests_per_remediation": format_requests(system.others[TEKTON_USER], n),
                "baseline_cpu_seconds": baseline.cpu,
                "system_cpu_seconds": system.cpu,
                "client_throttle_seconds": round(throttled, 2),
            }
            if paced is not None:
                rate, seconds = paced
                paced_latencies = (await run_paced(client, rate, seconds, seed)).latencies()
                figures.add(
                    f"RR created -> PipelineRun created p50 (paced {rate:g}/s)", "s", percentile(paced_latencies, 0.5)
                )
                figures.add(
                    f"RR created -> PipelineRun created p99 (paced {rate:g}/s)", "s", percentile(paced_latencies, 0.99)
                )
                run["paced"] = {"rate": rate, "count": len(paced_latencies)}
            await client.close()
            return run
        finally:
            for process in (tekton, controllers.process if controllers else None):
                if process is not None:
                    await asyncio.to_thread(process.stop)
            await asyncio.to_thread(plane.stop)


async def main(args: argparse.Namespace) -> None:
    figures = Figures()
    details: dict[str, Any] = {"runs": []}
    for i in range(args.repeats):
        paced = (args.rate, args.seconds) if args.rate else None
        details["runs"].append(await measure(figures, details, args.n, run_index=i, paced=paced))
    print(json.dumps({"machine": details["machine"], "figures": figures.to_json(), "runs": details["runs"]}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    asyncio.run(main(parser.parse_args()))

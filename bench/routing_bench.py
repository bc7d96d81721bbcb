"""Routing: the time of one decision against the history it reads, and RR -> WFE latency.

    .venv/bin/python -m bench.routing_bench [--sizes 10 10000] [--requests 100] [--profile]

1. Decision time. The orchestrator's informer caches are filled with N finished requests on one
   fingerprint and N finished executions on one target, exactly as watch events fill them; then
   the orchestrator's own `_route` (cache index lookups, `Cache.parsed` models, the lock lookup
   and `decide_routing`) decides for a new request. Warm = the parsed models are memoised, as in
   a running controller; cold = the first decision after the history arrived. `--profile` prints
   where the time of a warm decision at the largest size goes.
2. Latency. A real local control plane and the orchestrator in this process: a RemediationRequest
   is created and the time until its WorkflowExecution shows up on a watch is measured, one
   request at a time (unloaded) and then all at once (a burst; each on its own target).
"""

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from kubernaut.api.v1alpha1 import RemediationRequest
from kubernaut.audit.memory import MemoryAuditSink
from kubernaut.config import parse_settings
from kubernaut.controllers.kinds import NAMESPACE_KIND, RR_KIND, WFE_KIND
from kubernaut.controllers.manager import Manager, build_manager
from kubernaut.controllers.orchestrator import Orchestrator
from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.domain.duration import format_rfc3339
from kubernaut.domain.gates import MANAGED_LABEL
from kubernaut.domain.routing import DecisionKind, RoutingStage
from kubernaut.kube.client import install_crds, make_client
from kubernaut.kube.resources import RemediationRequestResource, WorkflowExecutionResource
from kubernaut.paths import crd_paths

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FP = "f" * 64
NS = "bench"
TARGET = {"kind": "Deployment", "name": "api", "namespace": NS}
TARGET_STRING = f"{NS}/Deployment/api"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))] if ordered else 0.0


# -- 1. decision time ---------------------------------------------------------------------------


def rr_body(index: int, status: dict[str, Any]) -> dict[str, Any]:
    created = NOW - timedelta(days=30) + timedelta(seconds=index)
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {
            "name": f"rr-{index:06d}",
            "namespace": NS,
            "uid": f"uid-rr-{index}",
            "resourceVersion": str(10_000_000 + index),
            "creationTimestamp": format_rfc3339(created),
        },
        "spec": {
            "signalFingerprint": FP,
            "signalName": "KubePodCrashLooping",
            "severity": "critical",
            "targetResource": TARGET,
            "workflowRef": {"workflowId": "restart", "version": "1.0.0", "containerImage": "bundle:1"},
        },
        "status": status,
    }


def history_rr(index: int) -> dict[str, Any]:
    done = format_rfc3339(NOW - timedelta(days=30) + timedelta(seconds=index + 60))
    if index % 3 == 2:
        status = {"overallPhase": "Completed", "outcome": "Remediated", "completedAt": done}
    else:
        status = {
            "overallPhase": "Failed",
            "failurePhase": "workflow_execution",
            "failureReason": "WorkflowExecution failed",
            "completedAt": done,
        }
    return rr_body(index, {"startTime": done, "transitionCount": 4, **status})


def history_wfe(index: int) -> dict[str, Any]:
    done = format_rfc3339(NOW - timedelta(days=30) + timedelta(seconds=index + 60))
    status: dict[str, Any] = {"phase": "Completed", "startTime": done, "completionTime": done, "duration": "1s"}
    if index % 3 != 2:
        status = {
            **status,
            "phase": "Failed",
            "failureDetails": {
                "failedTaskIndex": 0,
                "failedTaskName": "",
                "reason": "ImagePullBackOff",
                "message": "pull failed",
                "failedAt": done,
                "executionTimeBeforeFailure": "",
                "naturalLanguageSummary": "pull failed",
            },
        }
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {
            "name": f"we-rr-{index:06d}",
            "namespace": NS,
            "uid": f"uid-we-{index}",
            "resourceVersion": str(20_000_000 + index),
            "creationTimestamp": format_rfc3339(NOW - timedelta(days=30) + timedelta(seconds=index)),
        },
        "spec": {
            "remediationRequestRef": {"kind": "RemediationRequest", "name": f"rr-{index:06d}", "namespace": NS},
            "workflowRef": {"workflowId": "restart", "version": "1.0.0", "containerImage": "bundle:1"},
            "targetResource": TARGET_STRING,
        },
        "status": status,
    }


def build_orchestrator(size: int) -> tuple[Orchestrator, RemediationRequest]:
    """An orchestrator whose caches hold `size` historical requests and executions (no I/O)."""
    settings = parse_settings({"routing": {"backoffJitterPercent": 10}})
    manager = Manager(client=None, settings=settings, audit=MemoryAuditSink(), clock=lambda: NOW)  # type: ignore[arg-type]
    orchestrator = Orchestrator(manager)
    # the target's namespace opted in, so that the decision runs every check
    manager.cache(NAMESPACE_KIND).upsert({"metadata": {"name": NS, "labels": {MANAGED_LABEL: "true"}}})
    rrs, wfes = manager.cache(RR_KIND), manager.cache(WFE_KIND)
    for index in range(size):
        rrs.upsert(history_rr(index))
        wfes.upsert(history_wfe(index))
    new = rr_body(size + 1, {"overallPhase": "Analyzing", "startTime": format_rfc3339(NOW), "transitionCount": 2})
    new["metadata"]["creationTimestamp"] = format_rfc3339(NOW)
    rrs.upsert(new)
    return orchestrator, RemediationRequest.from_wire(new)


def decide(orchestrator: Orchestrator, rr: RemediationRequest) -> None:
    decision = orchestrator._route(rr, workflow_id="restart", stage=RoutingStage.ANALYZING)
    assert decision.kind == DecisionKind.PROCEED, decision


def time_decisions(size: int) -> dict[str, float]:
    orchestrator, rr = build_orchestrator(size)
    started = time.perf_counter()
    decide(orchestrator, rr)  # cold: every historical object is parsed once
    cold = time.perf_counter() - started
    runs = max(5, min(2000, 200_000 // max(size, 1)))
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        decide(orchestrator, rr)
        samples.append(time.perf_counter() - started)
    return {"size": size, "cold_ms": cold * 1000, "warm_ms": statistics.median(samples) * 1000, "runs": runs}


def profile_decision(size: int) -> str:
    orchestrator, rr = build_orchestrator(size)
    decide(orchestrator, rr)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        decide(orchestrator, rr)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(18)
    return out.getvalue()


# -- 2. RR created -> WFE created ----------------------------------------------------------------


def new_rr(namespace: str, index: int, tag: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {"name": f"rr-{tag}-{index:03d}", "namespace": namespace},
        "spec": {
            "signalFingerprint": uuid.uuid4().hex * 2,
            "signalName": "KubePodCrashLooping",
            "severity": "critical",
            "targetResource": {"kind": "Deployment", "name": f"app-{tag}-{index}", "namespace": namespace},
            "workflowRef": {"workflowId": "restart", "version": "1.0.0", "containerImage": "bundle:1"},
        },
    }


async def measure_latency(kube: AsyncClient, namespace: str, count: int, tag: str, burst: bool) -> list[float]:
    created: dict[str, float] = {}
    seen: dict[str, float] = {}
    arrived = {f"rr-{tag}-{index:03d}": asyncio.Event() for index in range(count)}
    done = asyncio.Event()
    listing = kube.list(WorkflowExecutionResource, namespace=namespace)
    async for _ in listing:
        pass
    version = listing.resourceVersion

    async def watch() -> None:
        async for type_, obj in kube.watch(WorkflowExecutionResource, namespace=namespace, resource_version=version):
            name = obj.metadata.name.removeprefix("we-")
            if type_ == "ADDED" and name.startswith(f"rr-{tag}-") and name not in seen:
                seen[name] = time.perf_counter()
                arrived[name].set()
                if len(seen) == count:
                    done.set()

    async def create(index: int) -> None:
        body = new_rr(namespace, index, tag)
        created[body["metadata"]["name"]] = time.perf_counter()
        await kube.create(RemediationRequestResource(body))

    watcher = asyncio.create_task(watch())
    try:
        if burst:
            await asyncio.gather(*(create(index) for index in range(count)))
        else:
            for index in range(count):
                await create(index)
                await asyncio.wait_for(arrived[f"rr-{tag}-{index:03d}"].wait(), 60)
        await asyncio.wait_for(done.wait(), 120)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
    return [seen[name] - created[name] for name in created]


async def run_latency(requests: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="kubernaut-bench-") as state:
        plane = ControlPlane(Path(state)).start()
        try:
            kube = make_client(plane.kubeconfig)
            await install_crds(kube, crd_paths())
            namespace = f"bench-{uuid.uuid4().hex[:6]}"
            await kube.create(Namespace(metadata=ObjectMeta(name=namespace, labels={MANAGED_LABEL: "true"})))
            # the bench measures latency, not the rate limits (executions never finish here: no executor)
            unlimited = {"maxExecutionsPerHour": 10**9, "perNamespace": {"maxExecutionsPerHour": 10**9}}
            settings = parse_settings(
                {
                    "execution": {"namespace": "bench-exec"},
                    "audit": {"url": "memory://"},
                    "limits": {"maxConcurrentExecutions": 10**9, **unlimited},
                }
            )
            manager = build_manager(
                settings, kubeconfig=plane.kubeconfig, controllers=("orchestrator",), audit=MemoryAuditSink()
            )
            stop, ready = asyncio.Event(), asyncio.Event()
            task = asyncio.create_task(manager.run(stop, ready))
            await asyncio.wait_for(ready.wait(), 60)
            try:
                return {
                    # ready comes before the watches stream: the first request may wait for them
                    "first after start": await measure_latency(kube, namespace, 1, "warm", burst=False),
                    "one at a time": await measure_latency(kube, namespace, requests, "seq", burst=False),
                    "all at once": await measure_latency(kube, namespace, requests, "burst", burst=True),
                }
            finally:
                stop.set()
                await asyncio.wait_for(task, 30)
                await manager.client.close()
                await kube.close()
        finally:
            plane.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 10_000])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()

    results = [time_decisions(size) for size in args.sizes]
    print("routing decision (history N requests + N executions on the fingerprint and target)")
    for row in results:
        size, warm, cold = row["size"], row["warm_ms"], row["cold_ms"]
        print(f"  N={size:>6}: warm {warm:9.3f} ms   cold {cold:9.1f} ms   ({row['runs']} runs)")
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(
            f"  ratio N={last['size']} / N={first['size']}: warm {last['warm_ms'] / first['warm_ms']:.0f}x, "
            f"cold {last['cold_ms'] / first['cold_ms']:.0f}x (history {last['size'] / first['size']:.0f}x)"
        )
    if args.profile:
        print(profile_decision(max(args.sizes)))
    if args.skip_latency:
        return
    latencies = asyncio.run(run_latency(args.requests))
    print("RR created -> WFE created, seen on a watch; orchestrator in-process, real local control plane")
    for label, values in latencies.items():
        ms = [v * 1000 for v in values]
        p50, p99 = percentile(ms, 0.5), percentile(ms, 0.99)
        print(f"  {label:>17}: p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   max {max(ms):7.1f} ms   (n={len(ms)})")


if __name__ == "__main__":
    main()

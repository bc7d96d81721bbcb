"""History: routing cost and operator memory as finished RemediationRequests and WorkflowExecutions pile up.

    .venv/bin/python -m bench.memory [--sizes 10,1000,10000] [--samples 8]

Every historical object shares one fingerprint and one target with the new requests, the worst case
for routing (every check looks at that history). The history is created directly as terminal
objects: RRs Completed two hours ago, WFEs Completed two hours ago (with the executor's
finalizer, as a real history has it), no lock held.

- RR -> WFE latency: a new RR on the same fingerprint and target, from the bench's watch seeing it
  to the bench's watch seeing its WFE; one at a time (each waits for the previous lock release).
- Routing decision time: the orchestrator's own routing step (cache lookups, parsing, the pure
  checks) in this process, on caches filled with the same history.
- RSS: `kubernaut run` with the history present, VmRSS once its caches are synced and again when it
  has gone idle.
- RR -> WFE latency just after a start: the operator is started afresh with the history present and
  a new request is created as soon as it is ready, while its start-up passes over the history are
  still queued (a leader takeover starts the workers on the same full queue). Median over restarts.
"""

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.types import PatchType, on_error_retry

from bench.common import (
    CONTROLLERS_USER,
    BenchPlane,
    Figures,
    count_requests,
    describe_machine,
    fetch_apiserver_version,
    prepare_cluster,
    rss_kib,
    start_controllers,
    start_tekton,
)
from bench.throughput import BUNDLE, EXEC_NS
from kubernaut.kube.resources import PipelineRunResource, RemediationRequestResource, WorkflowExecutionResource

NS = "bench-history"
FINGERPRINT = "f" * 64
DEPLOYMENT = "api"
TARGET = f"{NS}/Deployment/{DEPLOYMENT}"
FINALIZER = "workflowexecution.kubernaut.ai/workflowexecution-cleanup"
CONCURRENCY = 32


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_history_rr(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "RemediationRequest",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "signalFingerprint": FINGERPRINT,
            "signalName": "KubePodCrashLooping",
            "severity": "critical",
            "targetResource": {"kind": "Deployment", "name": DEPLOYMENT, "namespace": NS},
            "workflowRef": {"workflowId": "restart-deployment", "version": "1.0.0", "containerImage": BUNDLE},
        },
    }


def build_history_rr_status(wfe: str, done: datetime) -> dict[str, Any]:
    return {
        "overallPhase": "Completed",
        "outcome": "Remediated",
        "startTime": _ts(done - timedelta(seconds=30)),
        "completedAt": _ts(done),
        "workflowExecutionRef": {
            "apiVersion": "kubernaut.ai/v1alpha1",
            "kind": "WorkflowExecution",
            "name": wfe,
            "namespace": NS,
        },
    }


def build_history_wfe(name: str, rr: dict[str, Any]) -> dict[str, Any]:
    meta = rr["metadata"]
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {
            "name": name,
            "namespace": NS,
            "finalizers": [FINALIZER],
            "labels": {"kubernaut.ai/remediation-request": meta["name"]},
            "ownerReferences": [
                {
                    "apiVersion": "kubernaut.ai/v1alpha1",
                    "kind": "RemediationRequest",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "remediationRequestRef": {
                "apiVersion": "kubernaut.ai/v1alpha1",
                "kind": "RemediationRequest",
                "name": meta["name"],
                "namespace": NS,
                "uid": meta["uid"],
            },
            "workflowRef": {"workflowId": "restart-deployment", "version": "1.0.0", "containerImage": BUNDLE},
            "targetResource": TARGET,
        },
    }


def build_history_wfe_status(lock: str, done: datetime) -> dict[str, Any]:
    return {
        "phase": "Completed",
        "startTime": _ts(done - timedelta(seconds=20)),
        "completionTime": _ts(done),
        "duration": "20s",
        "pipelineRunRef": {"name": lock},
    }


async def grow_history(client: AsyncClient, start: int, end: int) -> None:
    """History objects start..end-1: one Completed RR and its Completed WFE each."""
    semaphore = asyncio.Semaphore(CONCURRENCY)
    base = datetime.now(UTC) - timedelta(hours=2)

    async def one(i: int) -> None:
        name = f"h-{i:06d}"
        done = base + timedelta(milliseconds=i)
        async with semaphore:
            rr = (await client.create(RemediationRequestResource(build_history_rr(name)))).to_dict()
            await client.patch(
                RemediationRequestResource.Status,
                name,
                {"status": build_history_rr_status(f"we-{name}", done)},
                namespace=NS,
                patch_type=PatchType.MERGE,
            )
            await client.create(WorkflowExecutionResource(build_history_wfe(f"we-{name}", rr)))
            await client.patch(
                WorkflowExecutionResource.Status,
                f"we-{name}",
                {"status": build_history_wfe_status("wfe-0000000000000000", done)},
                namespace=NS,
                patch_type=PatchType.MERGE,
            )

    await asyncio.gather(*(one(i) for i in range(start, end)))


async def sample_latency(client: AsyncClient, samples: int, label: str) -> list[float]:
    """RR seen -> WFE seen, one request at a time on the shared fingerprint and target.

    Each sample is watched by its own name, so that events of the history (a start-up pass over
    thousands of objects) cannot queue ahead of the sample's in the bench's streams."""
    latencies: list[float] = []
    for k in range(samples):
        latencies.append(await _one_sample(client, f"s-{label}-{k:03d}"))
    return latencies


async def _one_sample(client: AsyncClient, name: str) -> float:
    seen: dict[str, float] = {}
    phase: list[str] = []
    released = asyncio.Event()
    changed = asyncio.Event()

    async def watch(
        resource: Any, namespace: str, on_event: Callable[[str, dict[str, Any]], None], **selector: Any
    ) -> None:
        listing = client.list(resource, namespace=namespace, **selector)
        async for _ in listing:
            pass
        async for event, obj in client.watch(
            resource,
            namespace=namespace,
            resource_version=listing.resourceVersion,
            on_error=on_error_retry,
            **selector,
        ):
            on_event(event, obj.to_dict())
            changed.set()

    def on_rr(_event: str, body: dict[str, Any]) -> None:
        seen.setdefault("rr", time.monotonic())
        current = (body.get("status") or {}).get("overallPhase") or ""
        if current in ("Completed", "Failed", "TimedOut", "Skipped", "Cancelled", "Blocked"):
            phase[:] = [current]

    def on_wfe(_event: str, _body: dict[str, Any]) -> None:
        seen.setdefault("wfe", time.monotonic())

    def on_pr(event: str, _body: dict[str, Any]) -> None:
        if event == "DELETED":
            released.set()

    wfe = f"we-{name}"
    tasks = [
        asyncio.create_task(watch(RemediationRequestResource, NS, on_rr, fields={"metadata.name": name})),
        asyncio.create_task(
            watch(WorkflowExecutionResource, NS, on_wfe, labels={"kubernaut.ai/remediation-request": name})
        ),
        asyncio.create_task(
            watch(PipelineRunResource, EXEC_NS, on_pr, labels={"kubernaut.ai/workflow-execution": wfe})
        ),
    ]
    await asyncio.sleep(0.3)
    try:
        await client.create(RemediationRequestResource(build_history_rr(name)))
        deadline = time.monotonic() + 60
        while not (phase and (released.is_set() or phase[0] != "Completed")):
            if time.monotonic() > deadline:
                stuck = (await client.get(RemediationRequestResource, name, namespace=NS)).to_dict()
                raise TimeoutError(f"sample {name} did not finish: {json.dumps(stuck.get('status'))}")
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), 1)
        if phase[0] != "Completed" or "wfe" not in seen:
            ended = (await client.get(RemediationRequestResource, name, namespace=NS)).to_dict()
            raise RuntimeError(f"sample {name} ended {phase[0]} without running: {json.dumps(ended.get('status'))}")
        return seen["wfe"] - seen["rr"]
    finally:
        for task in tasks:
            task.cancel()


async def measure_rss(plane: BenchPlane) -> tuple[float, float, float, float]:
    """(MiB at ready, MiB when idle, peak MiB, seconds to ready) of `kubernaut run` with the history present."""
    started = time.monotonic()
    controllers = start_controllers(plane, EXEC_NS)
    try:
        await controllers.wait_ready(timeout=300)
        ready_seconds = time.monotonic() - started
        at_ready, _ = rss_kib(controllers.process.pid)
        await plane.settle_audit(quiet=3.0, timeout=120)
        idle, peak = rss_kib(controllers.process.pid)
        return at_ready / 1024, idle / 1024, peak / 1024, ready_seconds
    finally:
        await asyncio.to_thread(controllers.process.stop)


def build_routing_probe(history: int) -> Callable[[], object]:
    """The orchestrator's routing step for a new request, on caches holding `history` finished RRs and
    WFEs on its fingerprint and target (filled as the watches would; no API server involved)."""
    from kubernaut.api.v1alpha1.remediationrequest import RemediationRequest
    from kubernaut.audit.memory import MemoryAuditSink
    from kubernaut.config import parse_settings
    from kubernaut.controllers import orchestrator
    from kubernaut.controllers.kinds import NAMESPACE_KIND, RR_KIND, WFE_KIND
    from kubernaut.controllers.manager import Manager
    from kubernaut.domain.gates import MANAGED_LABEL
    from kubernaut.domain.routing import RoutingStage

    settings = parse_settings(
        {
            "execution": {"namespace": EXEC_NS},
            "routing": {"recentlyRemediatedCooldown": "0s"},
            "audit": {"url": "memory://"},
        }
    )
    # The routing step reads only the caches: no client is needed.
    manager = Manager(client=None, settings=settings, audit=MemoryAuditSink())  # type: ignore[arg-type]
    probe_target = orchestrator.setup(manager)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {MANAGED_LABEL: "true"}}}
    manager.dispatch(NAMESPACE_KIND.plural, "ADDED", namespace)  # opted in, as the live history's namespace is
    base = datetime.now(UTC) - timedelta(hours=2)
    version = 1000
    for i in range(history):
        name = f"h-{i:06d}"
        done = base + timedelta(milliseconds=i)
        uid = f"00000000-0000-0000-0000-{i:012d}"
        rr = build_history_rr(name)
        rr["metadata"].update(uid=uid, resourceVersion=str(version := version + 1), creationTimestamp=_ts(done))
        rr["status"] = build_history_rr_status(f"we-{name}", done)
        manager.dispatch(RR_KIND.plural, "ADDED", rr)
        wfe = build_history_wfe(f"we-{name}", rr)
        wfe["metadata"].update(
            uid=f"w{uid[1:]}", resourceVersion=str(version := version + 1), creationTimestamp=_ts(done)
        )
        wfe["status"] = build_history_wfe_status("wfe-0000000000000000", done)
        manager.dispatch(WFE_KIND.plural, "ADDED", wfe)
    body = build_history_rr("new")
    body["metadata"].update(
        uid="11111111-0000-0000-0000-000000000000",
        resourceVersion=str(version + 1),
        creationTimestamp=_ts(datetime.now(UTC)),
    )
    body["status"] = {"overallPhase": "Analyzing", "startTime": _ts(datetime.now(UTC))}
    manager.dispatch(RR_KIND.plural, "ADDED", body)
    rr_model = RemediationRequest.from_wire(body)

    def probe() -> object:
        decision = probe_target._route(rr_model, workflow_id="restart-deployment", stage=RoutingStage.ANALYZING)
        assert decision.kind == "Proceed", decision
        return decision

    return probe


def routing_decision_seconds(history: int, repeats: int = 30) -> float:
    """Median time of the orchestrator's routing step with `history` finished RRs and WFEs cached."""
    probe = build_routing_probe(history)
    probe()  # the first call parses the history once; later calls see it memoised
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        probe()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


async def latency_after_start(plane: BenchPlane, client: AsyncClient, restarts: int, label: str) -> list[float]:
    """RR -> WFE latency of one request created right after each of `restarts` fresh starts."""
    latencies: list[float] = []
    for k in range(restarts):
        controllers = start_controllers(plane, EXEC_NS)
        try:
            await controllers.wait_ready(timeout=300)
            latencies += await sample_latency(client, 1, f"{label}-start{k}")
        finally:
            await asyncio.to_thread(controllers.process.stop)
    return latencies


async def run(sizes: list[int], samples: int, figures: Figures, details: dict[str, Any]) -> None:
    for size in (sizes[0], sizes[-1]):
        figures.add(f"routing decision time ({size} historical)", "ms", routing_decision_seconds(size) * 1000)
    with tempfile.TemporaryDirectory(prefix="kubernaut-bench-history-") as tmp:
        plane = BenchPlane(Path(tmp))
        await asyncio.to_thread(plane.start)
        tekton = None
        try:
            client = await prepare_cluster(plane, [NS, EXEC_NS])
            details.setdefault("machine", describe_machine(await fetch_apiserver_version(plane)))
            tekton = start_tekton(plane, EXEC_NS)
            present = 0
            for size in sizes:
                began = time.monotonic()
                await grow_history(client, present, size)
                present = size
                details.setdefault("history_create_seconds", {})[str(size)] = round(time.monotonic() - began, 1)
                at_ready, idle, peak, ready_seconds = await measure_rss(plane)
                figures.add(f"operator RSS when synced ({size} RRs + {size} WFEs)", "MiB", at_ready)
                figures.add(f"operator RSS when idle ({size} RRs + {size} WFEs)", "MiB", idle)
                figures.add(f"operator peak RSS ({size} RRs + {size} WFEs)", "MiB", peak)
                figures.add(f"operator start to ready ({size} RRs + {size} WFEs)", "s", ready_seconds)
                controllers = start_controllers(plane, EXEC_NS)
                try:
                    await controllers.wait_ready(timeout=300)
                    await plane.settle_audit(quiet=3.0, timeout=120)
                    offset = plane.audit_offset()
                    latencies = await sample_latency(client, samples, str(size))
                    end = await plane.settle_audit(quiet=1.5)
                    requests = count_requests(plane.read_audit(offset, end), CONTROLLERS_USER)
                except BaseException:
                    keep = Path(tempfile.gettempdir()) / "kubernaut-bench-failed-controllers.log"
                    keep.write_bytes(controllers.process.log_path.read_bytes())
                    print(f"controllers log kept at {keep}")
                    raise
                finally:
                    await asyncio.to_thread(controllers.process.stop)
                after_start = await latency_after_start(plane, client, max(3, samples // 2), str(size))
                figures.add(
                    f"RR -> WFE latency just after a start, median ({size} historical)",
                    "s",
                    statistics.median(after_start),
                )
                figures.add(f"RR -> WFE latency, median ({size} historical)", "s", statistics.median(latencies))
                figures.add(f"RR -> WFE latency, max ({size} historical)", "s", max(latencies))
                details.setdefault("history_samples", {})[str(size)] = {
                    "latencies": [round(x, 4) for x in latencies],
                    "controller_requests_per_sample": {k: round(v / samples, 2) for k, v in requests.items()},
                    "latencies_just_after_start": [round(x, 4) for x in after_start],
                }
            await client.close()
        finally:
            if tekton is not None:
                await asyncio.to_thread(tekton.stop)
            await asyncio.to_thread(plane.stop)


async def main(args: argparse.Namespace) -> None:
    figures = Figures()
    details: dict[str, Any] = {}
    sizes = [int(s) for s in args.sizes.split(",")]
    await run(sizes, args.samples, figures, details)
    print(json.dumps({"figures": figures.to_json(), **details}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--samples", type=int, default=8)
    asyncio.run(main(parser.parse_args()))

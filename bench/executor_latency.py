"""Executor latency: how fast a WorkflowExecution gets its PipelineRun, and how fast Tekton's verdict
reaches the WorkflowExecution.

    .venv/bin/python -m bench.executor_latency [--runs 200] [--concurrency 1]

A fresh local control plane (etcd + kube-apiserver) with the CRDs; the executor runs in this
process with the production audit path (writer + SQLite store); the bench plays Tekton: as soon as
it sees a PipelineRun it marks it Succeeded. Every run uses its own target. Both intervals are
measured between the moments the bench's own watches deliver the two events:

    start   WFE ADDED                         -> PipelineRun ADDED
    finish  PipelineRun Succeeded=True seen   -> WFE phase Completed seen
"""

import argparse
import asyncio
import contextlib
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from bench.common import percentile
from kubernaut.audit.factory import open_audit_sink
from kubernaut.config import parse_settings
from kubernaut.controllers.manager import build_manager
from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.kube.client import install_crds, make_client, patch_status
from kubernaut.kube.resources import PipelineRunResource, WorkflowExecutionResource
from kubernaut.paths import crd_paths

WFE_NAMESPACE = "bench-wfe"
EXEC_NAMESPACE = "bench-exec"


@dataclass
class Timeline:
    """Watch-delivery moments (time.monotonic) per run, keyed by WFE name."""

    wfe_added: dict[str, float] = field(default_factory=dict)
    pr_added: dict[str, float] = field(default_factory=dict)
    pr_succeeded: dict[str, float] = field(default_factory=dict)
    wfe_completed: dict[str, float] = field(default_factory=dict)
    completed: dict[str, asyncio.Event] = field(default_factory=dict)

    def done(self, name: str) -> asyncio.Event:
        return self.completed.setdefault(name, asyncio.Event())


def wfe_manifest(name: str, index: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubernaut.ai/v1alpha1",
        "kind": "WorkflowExecution",
        "metadata": {"name": name, "namespace": WFE_NAMESPACE},
        "spec": {
            "remediationRequestRef": {"kind": "RemediationRequest", "name": f"rr-{index}", "namespace": WFE_NAMESPACE},
            "workflowRef": {"workflowId": "restart-pod", "version": "1.0.0", "containerImage": "bench/restart:1"},
            "targetResource": f"{WFE_NAMESPACE}/Deployment/app-{index}",
            "parameters": {"REPLICAS": "3"},
        },
    }


async def list_then_watch(client: AsyncClient, resource: Any, namespace: str) -> Any:
    """A watch that starts where an (empty) LIST ends, so no event is missed."""
    listing = client.list(resource, namespace=namespace)
    async for _ in listing:
        pass
    return client.watch(resource, namespace=namespace, resource_version=listing.resourceVersion)


async def watch_wfes(client: AsyncClient, timeline: Timeline, started: asyncio.Event) -> None:
    events = await list_then_watch(client, WorkflowExecutionResource, WFE_NAMESPACE)
    started.set()
    async for kind, obj in events:
        now = time.monotonic()
        name = obj.metadata.name
        if kind == "ADDED":
            timeline.wfe_added.setdefault(name, now)
        phase = ((obj.to_dict().get("status") or {}).get("phase")) or ""
        if phase == "Completed" and name not in timeline.wfe_completed:
            timeline.wfe_completed[name] = now
            timeline.done(name).set()


async def play_tekton(client: AsyncClient, timeline: Timeline, started: asyncio.Event) -> None:
    """Mark every new PipelineRun Succeeded at once; note when each verdict comes back by watch."""
    events = await list_then_watch(client, PipelineRunResource, EXEC_NAMESPACE)
    started.set()
    pending: set[asyncio.Task[None]] = set()

    async def succeed(name: str) -> None:
        moment = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        await patch_status(
            client,
            PipelineRunResource,
            name,
            EXEC_NAMESPACE,
            {
                "startTime": moment,
                "completionTime": moment,
                "conditions": [
                    {
                        "type": "Succeeded",
                        "status": "True",
                        "reason": "Succeeded",
                        "message": "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 0",
                        "lastTransitionTime": moment,
                    }
                ],
            },
        )

    async for kind, obj in events:
        now = time.monotonic()
        body = obj.to_dict()
        owner = (body["metadata"].get("labels") or {}).get("kubernaut.ai/workflow-execution", "")
        if kind == "ADDED" and owner not in timeline.pr_added:
            timeline.pr_added[owner] = now
            task = asyncio.create_task(succeed(body["metadata"]["name"]))
            pending.add(task)
            task.add_done_callback(pending.discard)
        conditions = (body.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Succeeded" and c.get("status") == "True" for c in conditions):
            timeline.pr_succeeded.setdefault(owner, now)


async def run_bench(runs: int, concurrency: int, state_dir: Path) -> dict[str, list[float]]:
    plane = ControlPlane(state_dir / "controlplane")
    plane.start()
    try:
        client = make_client(plane.kubeconfig)
        try:
            await install_crds(client, crd_paths())
            for namespace in (WFE_NAMESPACE, EXEC_NAMESPACE):
                await client.create(Namespace(metadata=ObjectMeta(name=namespace)))
            return await measure(client, plane.kubeconfig, runs, concurrency, state_dir)
        finally:
            await client.close()
    finally:
        plane.stop()


async def measure(
    client: AsyncClient, kubeconfig: Path, runs: int, concurrency: int, state_dir: Path
) -> dict[str, list[float]]:
    settings = parse_settings(
        {
            "execution": {"namespace": EXEC_NAMESPACE, "cooldown": "1h"},
            "audit": {"url": f"sqlite:///{state_dir}/audit.db"},
        }
    )
    timeline = Timeline()
    async with open_audit_sink(settings.audit, state_dir) as audit:
        manager = build_manager(settings, kubeconfig=kubeconfig, controllers=("executor",), audit=audit)
        stop, ready = asyncio.Event(), asyncio.Event()
        operator = asyncio.create_task(manager.run(stop, ready))
        watched = [asyncio.Event(), asyncio.Event()]
        watchers = [
            asyncio.create_task(watch_wfes(client, timeline, watched[0])),
            asyncio.create_task(play_tekton(client, timeline, watched[1])),
        ]
        try:
            await asyncio.wait_for(ready.wait(), 60)
            for event in watched:
                await asyncio.wait_for(event.wait(), 30)
            slots = asyncio.Semaphore(concurrency)

            async def one(index: int) -> None:
                name = f"wfe-{index:04d}"
                async with slots:
                    await client.create(WorkflowExecutionResource(wfe_manifest(name, index)))
                    await asyncio.wait_for(timeline.done(name).wait(), 60)

            await asyncio.gather(*(one(i) for i in range(runs)))
        finally:
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            stop.set()
            try:
                await asyncio.wait_for(operator, 30)
            except TimeoutError:
                logging.warning("the manager did not stop within 30 s; cancelled")
            await manager.client.close()
    names = sorted(timeline.wfe_completed)
    return {
        "WFE created -> PipelineRun created": [timeline.pr_added[n] - timeline.wfe_added[n] for n in names],
        "PipelineRun Succeeded -> WFE Completed": [timeline.wfe_completed[n] - timeline.pr_succeeded[n] for n in names],
    }


def print_table(results: dict[str, list[float]], runs: int, concurrency: int) -> None:
    print(f"\nExecutor latency: {runs} runs, {concurrency} at a time (watch delivery to watch delivery)\n")
    header = f"{'interval':<40} {'n':>5} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'max ms':>9}"
    print(header)
    print("-" * len(header))
    for name, values in results.items():
        ms = [v * 1000 for v in values]
        print(
            f"{name:<40} {len(ms):>5} {percentile(ms, 0.50):>9.1f} {percentile(ms, 0.99):>9.1f} "
            f"{statistics.fmean(ms):>9.1f} {max(ms):>9.1f}"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="kubernaut-bench-") as tmp:
        results = asyncio.run(run_bench(args.runs, args.concurrency, Path(tmp)))
    print_table(results, args.runs, args.concurrency)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

"""Remediations end to end on real Tekton: from a request created to the request Completed.

    .venv/bin/python -m bench.tekton_e2e [--n 50] [--repeats 1] [--rate 2 --seconds 30]

The throughput bench plays Tekton's part in one status write, so that its ratio isolates the
controllers' cost. This one runs everything a user's cluster runs except the kubelet: Tekton's
controller resolves each PipelineRun's bundle from the local registry (through its resolvers),
creates a TaskRun and its pod, the scheduler binds the pod to the kwok node, kwok ends its step,
and the controllers complete the request and release the lock (cooldown 1 s, foreground deletion,
so the garbage collector removes the TaskRun and the pod).

N requests on distinct targets are created at once (a burst), then optionally at a steady rate.
Figures: remediations per second (N over the time from the first request created to the last
Completed), p50/p99 from each request created to it Completed as the bench's watch sees it, and
the CPU seconds of every process over the burst, with each one's share of the machine.
"""

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccount

from bench.common import (
    BenchPlane,
    Figures,
    describe_machine,
    fetch_apiserver_version,
    percentile,
    prepare_cluster,
    start_controllers,
)
from bench.throughput import EXEC_NS, PACED_NS, RR_NS, run_burst, run_paced
from kubernaut.devcluster.binaries import build_tekton_binaries
from kubernaut.devcluster.bundles import SAMPLE_PREFIX, build_pipeline, local_image, parse_sample
from kubernaut.devcluster.registry import push_bundle, start_registry
from kubernaut.devcluster.tekton import start_tekton

SAMPLE = "succeed:1tasks-0s"  # one task whose pod kwok ends at once
RUNNER = "kubernaut-workflow-runner"
# The share of the machine that these processes' CPU time is reported for, by name.
GROUPS = {
    "tekton": ("tekton-controller", "tekton-resolvers", "registry"),
    "kwok": ("kwok",),
    "scheduler": ("kube-scheduler",),
    "controller-manager": ("kube-controller-manager",),
    "apiserver+etcd": ("kube-apiserver", "etcd"),
    "controllers": ("controllers",),
    "bench": ("bench",),
}


async def start_cluster(plane: BenchPlane) -> tuple[AsyncClient, str]:
    """Tekton and a registry holding the sample bundle on a fresh plane; returns the bench's client
    and the bundle's reference."""
    binaries = await asyncio.to_thread(build_tekton_binaries)
    await asyncio.to_thread(start_tekton, plane.plane, binaries)
    client = await prepare_cluster(plane, [RR_NS, EXEC_NS, PACED_NS], tekton_crds=False)
    # The garbage collector learns the new kinds at once, not at its next discovery (30 s).
    await asyncio.to_thread(plane.plane.restart_controller_manager)
    registry = await asyncio.to_thread(start_registry, plane.plane, binaries.crane)
    bundle = local_image(f"{SAMPLE_PREFIX}{SAMPLE}", registry)
    await asyncio.to_thread(push_bundle, bundle, [build_pipeline(parse_sample(SAMPLE))])
    with contextlib.suppress(ApiError):
        await client.create(ServiceAccount(metadata=ObjectMeta(name=RUNNER, namespace=EXEC_NS)))
    return client, bundle


def cpu_shares(cpu: dict[str, float], seconds: float) -> dict[str, dict[str, float]]:
    """CPU seconds per group of processes, and the share of the machine's cores over `seconds`."""
    capacity = seconds * (os.cpu_count() or 1)
    shares = {}
    for group, names in GROUPS.items():
        used = sum(value for name, value in cpu.items() if name in names)
        shares[group] = {"cpu_seconds": round(used, 2), "machine_share": round(used / capacity, 3)}
    return shares


async def measure_burst(
    plane: BenchPlane, client: AsyncClient, n: int, bundle: str, pids: dict[str, int]
) -> dict[str, Any]:
    burst = await run_burst(
        plane, client, n, RR_NS, f"e2e-{time.time_ns()}", pids, bundle=bundle, seconds_per_request=2
    )
    by_user = Counter(record.user for record in burst.records)
    return {
        "requests_per_remediation": {user: round(count / n, 1) for user, count in by_user.most_common()},
        "seconds": burst.seconds,
        "durations": burst.timeline.durations(),
        "spans": burst.timeline.spans(),
        "cpu": cpu_shares(burst.cpu, burst.seconds),
    }


async def measure(
    figures: Figures, details: dict[str, Any], n: int, paced: tuple[float, float] | None = None
) -> dict[str, Any]:
    """One burst of n (and a paced run) on a fresh control plane with real Tekton."""
    with tempfile.TemporaryDirectory(prefix="kubernaut-bench-e2e-") as tmp:
        plane = BenchPlane(Path(tmp))
        await asyncio.to_thread(plane.start)
        controllers = None
        try:
            client, bundle = await start_cluster(plane)
            details.setdefault("machine", describe_machine(await fetch_apiserver_version(plane)))
            controllers = start_controllers(plane, EXEC_NS)
            await controllers.wait_ready()
            burst = await measure_burst(plane, client, n, bundle, {"controllers": controllers.process.pid})
            durations = burst["durations"]
            figures.add(f"real Tekton remediations/s (burst N={n})", "1/s", n / burst["seconds"])
            figures.add(f"real Tekton RR created -> Completed p50 (burst N={n})", "s", percentile(durations, 0.5))
            figures.add(f"real Tekton RR created -> Completed p99 (burst N={n})", "s", percentile(durations, 0.99))
            for span, values in burst["spans"].items():
                figures.add(f"real Tekton {span} p50 (burst N={n})", "s", percentile(values, 0.5))
            for group, share in burst["cpu"].items():
                figures.add(f"real Tekton CPU share of {group} (burst N={n})", "cores", share["machine_share"])
            run: dict[str, Any] = {
                "n": n,
                "seconds": round(burst["seconds"], 2),
                "cpu": burst["cpu"],
                "requests_per_remediation": burst["requests_per_remediation"],
            }
            if paced is not None:
                rate, seconds = paced
                paced_durations = (await run_paced(client, rate, seconds, f"e2e-{time.time_ns()}", bundle)).durations()
                for q in (0.5, 0.99):
                    figures.add(
                        f"real Tekton RR created -> Completed p{int(q * 100)} (paced {rate:g}/s)",
                        "s",
                        percentile(paced_durations, q),
                    )
                run["paced"] = {"rate": rate, "count": len(paced_durations)}
            await client.close()
            return run
        finally:
            if controllers is not None:
                await asyncio.to_thread(controllers.process.stop)
            await asyncio.to_thread(plane.stop)


async def main(args: argparse.Namespace) -> None:
    figures = Figures()
    details: dict[str, Any] = {"runs": []}
    paced = (args.rate, args.seconds) if args.rate else None
    for i in range(args.repeats):
        print(f"real Tekton burst N={args.n} run {i + 1}/{args.repeats}", flush=True)
        details["runs"].append(await measure(figures, details, args.n, paced))
    print(json.dumps({"machine": details["machine"], "figures": figures.to_json(), "runs": details["runs"]}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="requests per second after the burst (0: none)")
    parser.add_argument("--seconds", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))

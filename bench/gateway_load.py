"""Gateway under load: 10,000 alerts (90% repeats) against the real local control plane.

    .venv/bin/python -m bench.gateway_load [--alerts N] [--distinct N] [--batch N] [--concurrency N] [--json PATH]

The gateway runs in this process; a separate load process posts Alertmanager payloads in
batches, several requests in flight, in shuffled order (first sightings and repeats of one
signal race each other). Afterwards the RemediationRequests are listed and checked: exactly one
per distinct fingerprint, and the occurrence counts add up to the number of alerts sent (none
lost, none counted twice). Prints alerts/s and request latency percentiles.
"""

import argparse
import asyncio
import json
import math
import multiprocessing
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace

from kubernaut.config import GatewayConfig
from kubernaut.devcluster.controlplane import ControlPlane
from kubernaut.domain.signals import compute_fingerprint
from kubernaut.gateway import GatewayServer, generate_token
from kubernaut.kube.client import install_crds, make_client
from kubernaut.kube.resources import RemediationRequestResource
from kubernaut.paths import crd_paths

NAMESPACE = "bench-gateway"


def build_alert(index: int, starts_at: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {
            "alertname": "KubePodCrashLooping",
            "namespace": "bench",
            "pod": f"api-{index:05d}",
            "severity": "critical",
            "job": "kube-state-metrics",
        },
        "annotations": {"summary": f"Pod bench/api-{index:05d} is crash looping"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
    }


def build_stream(alerts: int, distinct: int, seed: int) -> list[int]:
    """Every distinct signal once plus random repeats, shuffled."""
    rng = random.Random(seed)
    stream = list(range(distinct)) + [rng.randrange(distinct) for _ in range(alerts - distinct)]
    rng.shuffle(stream)
    return stream


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run_load(url: str, token: str, stream: list[int], batch: int, concurrency: int) -> dict[str, Any]:
    """The load process: post the stream in batches; returns latencies and answers."""
    return asyncio.run(_load(url, token, stream, batch, concurrency))


async def _load(url: str, token: str, stream: list[int], batch: int, concurrency: int) -> dict[str, Any]:
    starts_at = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    batches = [stream[i : i + batch] for i in range(0, len(stream), batch)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    created = deduplicated = 0
    queue: asyncio.Queue[list[int]] = asyncio.Queue()
    for item in batches:
        queue.put_nowait(item)
    headers = {"Authorization": f"Bearer {token}"}

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal created, deduplicated
        while not queue.empty():
            indexes = queue.get_nowait()
            payload = {"version": "4", "status": "firing", "alerts": [build_alert(i, starts_at) for i in indexes]}
            started = time.perf_counter()
            async with session.post(url, json=payload, headers=headers) as response:
                answer = await response.json()
                latencies.append(time.perf_counter() - started)
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if response.status == 200:
                    created += len(answer["created"])
                    deduplicated += len(answer["deduplicated"])

    began = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {
        "elapsed": elapsed,
        "latencies": latencies,
        "statuses": statuses,
        "created": created,
        "deduplicated": deduplicated,
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    stream = build_stream(args.alerts, args.distinct, args.seed)
    expected_fingerprints = {compute_fingerprint(build_alert(i, "")["labels"]) for i in set(stream)}
    with tempfile.TemporaryDirectory(prefix="kubernaut-bench-") as tmp:
        plane = await asyncio.to_thread(ControlPlane(Path(tmp)).start)
        client = make_client(plane.kubeconfig)
        try:
            await install_crds(client, crd_paths())
            await client.create(Namespace(metadata=ObjectMeta(name=NAMESPACE)))
            token = generate_token()
            token_file = Path(tmp) / "token"
            token_file.write_text(token)
            server = GatewayServer(
                client, GatewayConfig(listen="127.0.0.1:0", namespace=NAMESPACE, bearer_token_file=str(token_file))
            )
            await server.start()
            try:
                loop = asyncio.get_running_loop()
                with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                    load = await loop.run_in_executor(
                        pool, run_load, server.webhook_url, token, stream, args.batch, args.concurrency
                    )
            finally:
                await server.stop()
            rrs = [o.to_dict() async for o in client.list(RemediationRequestResource, namespace=NAMESPACE)]
        finally:
            await client.close()
            await asyncio.to_thread(plane.stop)

    fingerprints = [rr["spec"]["signalFingerprint"] for rr in rrs]
    counted = sum(int(rr.get("status", {}).get("deduplication", {}).get("occurrenceCount", 0)) for rr in rrs)
    latencies = load["latencies"]
    result = {
        "alerts": len(stream),
        "distinct_fingerprints": len(expected_fingerprints),
        "batch": args.batch,
        "concurrency": args.concurrency,
        "requests": len(latencies),
        "statuses": load["statuses"],
        "remediations_created": len(rrs),
        "occurrences_counted": counted,
        "answers_created": load["created"],
        "answers_deduplicated": load["deduplicated"],
        "elapsed_seconds": round(load["elapsed"], 2),
        "alerts_per_second": round(len(stream) / load["elapsed"], 1),
        "request_p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "request_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "per_alert_p99_ms": round(percentile(latencies, 0.99) * 1000 / args.batch, 2),
    }
    problems = []
    if set(fingerprints) != expected_fingerprints or len(fingerprints) != len(set(fingerprints)):
        problems.append(f"{len(rrs)} RemediationRequests for {len(expected_fingerprints)} distinct fingerprints")
    if counted != len(stream):
        problems.append(f"occurrence counts add up to {counted}, {len(stream)} alerts were sent")
    if load["statuses"] != {200: len(latencies)}:
        problems.append(f"non-200 answers: {load['statuses']}")
    result["ok"] = not problems
    result["problems"] = problems
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--distinct", type=int, default=1_000, help="distinct signals (10%% of 10,000: 90%% repeats)")
    parser.add_argument("--batch", type=int, default=50, help="alerts per request")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = asyncio.run(bench(args))
    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Audit trail throughput and `record()` latency, on a SQLite file and a real PostgreSQL server.

    .venv/bin/python -m bench.audit_bench [--events N] [--json PATH]

For each store it measures:
- store append: events/s of `append()` in batches of 100 (the chain is built inside each transaction);
- sustained: events/s from the first `record()` to the last event accepted by the store, with 16
  tasks recording at once through the writer (outbox, group commit, batched delivery);
- record latency: p50/p99 of `record()` (the part on the reconcile path), one task at a time and
  under the 16-task load, while the writer delivers in the background.
PostgreSQL runs with fsync on, as in production; SQLite uses synchronous=FULL for store and outbox.
"""

import argparse
import asyncio
import json
import math
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.conftest_postgres import running_postgres

from kubernaut.api.audit import AuditEvent, build_event_id
from kubernaut.audit.postgres import PostgresAuditStore
from kubernaut.audit.sqlite import SqliteAuditStore
from kubernaut.audit.store import AuditStore
from kubernaut.audit.writer import AuditWriter

CONCURRENCY = 16


def build_events(prefix: str, count: int) -> list[AuditEvent]:
    now = datetime.now(UTC)
    return [
        AuditEvent(
            event_id=build_event_id(prefix, str(i)),
            event_type="workflow.completed",
            event_category="workflow",
            event_action="completed",
            event_outcome="success",
            actor_type="service",
            actor_id="workflowexecution-controller",
            resource_type="WorkflowExecution",
            resource_id=f"we-rr-{i}",
            correlation_id=f"rr-uid-{i % 97}",
            namespace="production",
            event_time=now,
            event_data={
                "workflow_id": "restart-pod",
                "workflow_version": "1.2.0",
                "target_resource": f"production/Deployment/app-{i % 13}",
                "phase": "Completed",
                "container_image": "ghcr.io/example/restart@sha256:" + "ab" * 32,
                "execution_name": f"we-rr-{i}",
                "pipelinerun_name": f"wfe-{i:016x}",
                "duration": "42s",
            },
        )
        for i in range(count)
    ]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


async def bench_append(store: AuditStore, count: int) -> float:
    events = build_events("append", count)
    started = time.perf_counter()
    for i in range(0, count, 100):
        await store.append(events[i : i + 100])
    return count / (time.perf_counter() - started)


async def wait_delivered(writer: AuditWriter, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while writer.buffered:
        if time.monotonic() > deadline:
            raise RuntimeError("the writer did not deliver the outbox in time")
        await asyncio.sleep(0.005)


async def bench_writer(store: AuditStore, outbox: Path, count: int) -> dict[str, float]:
    writer = AuditWriter(store, outbox, batch_size=100, flush_interval=0.2)
    await writer.start()
    try:
        sequential: list[float] = []
        for event in build_events("sequential", min(count, 2000)):
            started = time.perf_counter()
            await writer.record(event)
            sequential.append(time.perf_counter() - started)
        await wait_delivered(writer)

        concurrent: list[float] = []
        events = build_events("concurrent", count)

        async def worker(part: list[AuditEvent]) -> None:
            for event in part:
                started = time.perf_counter()
                await writer.record(event)
                concurrent.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker(events[i::CONCURRENCY]) for i in range(CONCURRENCY)))
        recorded = time.perf_counter() - started
        await wait_delivered(writer)
        delivered = time.perf_counter() - started
    finally:
        await writer.close()
    return {
        "record_p50_ms_sequential": percentile(sequential, 0.50) * 1000,
        "record_p99_ms_sequential": percentile(sequential, 0.99) * 1000,
        "record_p50_ms_concurrent": percentile(concurrent, 0.50) * 1000,
        "record_p99_ms_concurrent": percentile(concurrent, 0.99) * 1000,
        "recorded_events_per_s": count / recorded,
        "sustained_events_per_s": count / delivered,
    }


@asynccontextmanager
async def stores(workdir: Path) -> AsyncIterator[list[tuple[str, Callable[[], Any]]]]:
    with running_postgres(fsync=True) as server:

        async def sqlite() -> AuditStore:
            return await SqliteAuditStore.open(workdir / "sqlite" / "audit.db")

        async def postgres() -> AuditStore:
            return await PostgresAuditStore.open(server.url)

        yield [("sqlite", sqlite), ("postgresql", postgres)]


async def run(count: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        workdir = Path(tmp)
        async with stores(workdir) as kinds:
            for name, open_store in kinds:
                store = await open_store()
                try:
                    figures = {"append_events_per_s": await bench_append(store, count)}
                    figures |= await bench_writer(store, workdir / f"{name}-outbox.db", count)
                    verified = await store.verify()
                    if not verified.ok or verified.count != count * 2 + min(count, 2000):
                        raise RuntimeError(f"{name}: unexpected chain after the run: {verified}")
                finally:
                    await store.close()
                results[name] = figures
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000, help="events per measurement (default 10000)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    results = asyncio.run(run(args.events))
    columns = list(next(iter(results.values())))
    print(f"{'metric':<28}" + "".join(f"{name:>14}" for name in results))
    for column in columns:
        print(f"{column:<28}" + "".join(f"{figures[column]:>14.2f}" for figures in results.values()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

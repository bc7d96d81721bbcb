"""kill -9 at random moments while remediations run: the operator is killed again and again and
restarted each time; afterwards every request has settled, nothing ran twice and the audit trail
has exactly one event per transition."""

import asyncio
import random
import time
from datetime import timedelta
from pathlib import Path

import pytest
from lightkube import AsyncClient

from tests.faults.conftest import Scale
from tests.faults.support import (
    Operator,
    PipelineRunLedger,
    Workload,
    background,
    check_invariants,
    deadline,
    overdue_locks,
    wait_locks_released,
    wait_settled,
    write_operator_config,
)
from tests.integration.harness import create_execution_namespace

pytestmark = [pytest.mark.tekton, pytest.mark.usefixtures("clean_cluster")]

COOLDOWN = 2.0


@deadline()
async def test_random_kills_during_remediations(
    kube: AsyncClient, kubeconfig: Path, namespace: str, tmp_path: Path, scale: Scale
) -> None:
    exec_ns = await create_execution_namespace(kube)
    audit_db = tmp_path / "audit.db"
    config = write_operator_config(tmp_path / "operator.yaml", exec_ns, audit_db)
    operator = Operator(kubeconfig, tmp_path)
    ledger = PipelineRunLedger(kube, exec_ns)
    workload = Workload(kube, namespace, seed=11)
    rng = random.Random(5)
    # Requests arrive at about 2 per second; the kills are spread over that period.
    arrival = 0.5
    period = scale.remediations * arrival
    started = time.monotonic()
    try:
        async with background(ledger):
            operator.start(config)

            async def arrive() -> None:
                for _ in range(scale.remediations):
                    await workload.create_one()
                    await asyncio.sleep(rng.uniform(0, 2 * arrival))

            arrivals = asyncio.create_task(arrive())
            while operator.kills < scale.kills:
                # Anywhere in a run: during start-up and the first LIST as well as mid-reconcile.
                await asyncio.sleep(rng.uniform(0.5, max(1.0, 2 * period / scale.kills - 2.5)))
                operator.kill()
                operator.start(config)
            await arrivals
            await operator.wait_ready()
            settled = await wait_settled(kube, namespace, exec_ns, timeout=120)
            assert overdue_locks(settled, timedelta(seconds=COOLDOWN), slack=timedelta(seconds=5)) == []
            await wait_locks_released(kube, exec_ns, COOLDOWN, timeout=30)
            assert await operator.stop() == 0, operator.tail()
        verdict = await check_invariants(kube, namespace, exec_ns, audit_db, ledger)
        verdict.figures.update(
            runs=operator.runs,
            kills=operator.kills,
            seconds=round(time.monotonic() - started, 1),
            workload=dict(workload.kinds),
        )
        print("crash campaign:", verdict.figures)
        assert verdict.problems == [], verdict.problems
        assert operator.kills >= scale.kills
        assert verdict.figures["requests"] == scale.remediations
    finally:
        operator.cleanup()

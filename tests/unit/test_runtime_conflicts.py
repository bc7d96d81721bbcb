"""A write conflict in a reconcile is normal under contention: retried with back-off, logged at debug
level and counted per controller; other failures stay warnings."""

import asyncio
import logging

import pytest
from prometheus_client import REGISTRY

from kubernaut.kube.errors import AlreadyExists, Conflict
from kubernaut.kube.runtime import Controller, Result
from tests.unit.fake_api import build_conflict

RUNTIME_LOGGER = "kubernaut.kube.runtime"


def conflicts(controller: str) -> float:
    return REGISTRY.get_sample_value("kubernaut_reconcile_conflicts_total", {"controller": controller}) or 0.0


async def run_once_failing(name: str, error: Exception) -> Controller:
    """A controller whose first pass of `a` raises `error`; returns once the retry is scheduled."""
    failed = asyncio.Event()

    async def reconcile(key: str) -> Result:
        failed.set()
        raise error

    controller = Controller(name, reconcile, workers=1, base_delay=60.0, clock=lambda: 0.0)
    stop = asyncio.Event()
    running = asyncio.create_task(controller.run(stop))
    controller.enqueue("a")
    await failed.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    stop.set()
    await running
    return controller


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(build_conflict(), id="api-error"),
        pytest.param(Conflict("the object has been modified", code=409, reason="Conflict"), id="tree"),
    ],
)
async def test_a_conflict_is_retried_quietly_and_counted(caplog: pytest.LogCaptureFixture, error: Exception) -> None:
    caplog.set_level(logging.DEBUG, logger=RUNTIME_LOGGER)
    before = conflicts("conflicted")

    controller = await run_once_failing("conflicted", error)

    assert conflicts("conflicted") == before + 1
    assert controller.queue.num_requeues("a") == 1  # retried with back-off like any failure
    records = [r for r in caplog.records if r.name == RUNTIME_LOGGER]
    assert [r.levelno for r in records] == [logging.DEBUG]
    assert "conflict" in records[0].getMessage()


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(RuntimeError("boom"), id="bug"),
        pytest.param(AlreadyExists("boom: already exists", code=409, reason="AlreadyExists"), id="already-exists"),
    ],
)
async def test_other_failures_stay_warnings_and_are_not_conflicts(
    caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    caplog.set_level(logging.DEBUG, logger=RUNTIME_LOGGER)
    before = conflicts("broken")

    await run_once_failing("broken", error)

    assert conflicts("broken") == before
    records = [r for r in caplog.records if r.name == RUNTIME_LOGGER]
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "boom" in records[0].getMessage()

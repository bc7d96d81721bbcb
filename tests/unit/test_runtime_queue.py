"""WorkQueue and Controller semantics (client-go's): one pending entry per key, the earliest deadline
wins, adds during processing coalesce, per-key back-off doubles on errors and resets on success.

Time is a fake clock; the tests move it and release what is due themselves, so nothing sleeps."""

import asyncio

import pytest
from prometheus_client import REGISTRY

from kubernaut.kube.runtime import Controller, Result, WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def settle() -> None:
    """Let every ready task run (tiny event-loop yields, no real waiting)."""
    for _ in range(20):
        await asyncio.sleep(0)


def ready(queue: WorkQueue) -> list[str]:
    """The ready keys in the order workers would get them (taken without processing them)."""
    keys = []
    while (key := queue._take()) is not None:
        keys.append(key)
    return keys


async def test_a_key_waits_once_however_often_it_is_delayed() -> None:
    queue = WorkQueue("q")
    for _ in range(100):
        queue.add_after("a", 60)
    queue.add_after("b", 60)
    assert len(queue) == 2


async def test_one_entry_per_key_is_released_once() -> None:
    clock = FakeClock()
    queue = WorkQueue("q", clock=clock)
    for delay in (5, 6, 7, 5, 9):
        queue.add_after("a", delay)
    clock.advance(4.9)
    assert queue.release_due() == pytest.approx(0.1)
    assert ready(queue) == []
    clock.advance(0.1)
    assert queue.release_due() is None
    assert ready(queue) == ["a"]
    clock.advance(100)
    assert queue.release_due() is None
    assert ready(queue) == []
    assert len(queue) == 0


@pytest.mark.parametrize("delays", [(10, 2), (2, 10)])
async def test_the_earliest_deadline_wins(delays: tuple[float, float]) -> None:
    clock = FakeClock()
    queue = WorkQueue("q", clock=clock)
    for delay in delays:
        queue.add_after("a", delay)
    assert queue.release_due() == 2
    clock.advance(2)
    queue.release_due()
    assert ready(queue) == ["a"]
    clock.advance(8)
    assert queue.release_due() is None
    assert ready(queue) == []  # the later deadline was not kept


async def test_an_earlier_deadline_leaves_no_stale_entries_behind() -> None:
    clock = FakeClock()
    queue = WorkQueue("q", clock=clock)
    for delay in range(1000, 0, -1):  # every call moves the deadline forward
        queue.add_after("a", delay)
    assert len(queue._delayed) <= 20
    clock.advance(1)
    queue.release_due()
    assert ready(queue) == ["a"]


async def test_adds_while_processing_coalesce_into_one_more_pass() -> None:
    clock = FakeClock()
    queue = WorkQueue("q", clock=clock)
    queue.add("a")
    assert await queue.get() == "a"
    queue.add("a")
    queue.add("a")
    queue.add_after("a", 1)
    clock.advance(1)
    queue.release_due()
    assert ready(queue) == []  # not while it is processed
    queue.done("a")
    assert ready(queue) == ["a"]
    assert len(queue) == 0


async def test_busy_while_a_key_is_ready_or_processed_not_while_it_waits() -> None:
    clock = FakeClock()
    queue = WorkQueue("q", clock=clock)
    queue.add_after("a", 5)
    assert not queue.busy()
    clock.advance(5)
    queue.release_due()
    assert queue.busy()
    assert await queue.get() == "a"
    assert queue.busy()
    queue.done("a")
    assert not queue.busy()


async def test_background_keys_wait_behind_every_urgent_one() -> None:
    queue = WorkQueue("q", clock=FakeClock())
    for key in ("old-1", "old-2", "old-3"):
        queue.add(key, background=True)
    queue.add("new")
    queue.add("old-2")  # asked for normally: moves up
    queue.add("old-1", background=True)  # already waiting: stays where it is
    assert ready(queue) == ["new", "old-2", "old-1", "old-3"]
    assert not queue.busy()


async def test_a_worker_takes_an_urgent_key_before_a_long_background_backlog() -> None:
    queue = WorkQueue("q", clock=FakeClock())
    for i in range(1000):
        queue.add(f"done-{i}", background=True)
    assert await queue.get() == "done-0"
    queue.add("live")
    assert await queue.get() == "live"
    queue.done("done-0")
    queue.done("live")
    assert len(queue) == 999


async def test_a_background_add_while_processing_stays_background_unless_asked_normally() -> None:
    queue = WorkQueue("q", clock=FakeClock())
    queue.add("a")
    queue.add("b", background=True)
    assert await queue.get() == "a"
    queue.add("a", background=True)
    queue.done("a")
    assert ready(queue) == ["b", "a"]  # both background now, in order of arrival
    queue.add("c")
    assert await queue.get() == "c"
    queue.add("c", background=True)
    queue.add("c")
    queue.add("d", background=True)
    queue.done("c")
    assert ready(queue) == ["c", "d"]


async def test_get_waits_until_a_key_is_added() -> None:
    queue = WorkQueue("q", clock=FakeClock())
    waiter = asyncio.create_task(queue.get())
    await settle()
    assert not waiter.done()
    queue.add("a", background=True)
    await settle()
    assert waiter.result() == "a"


async def test_controller_reconciles_live_objects_before_finished_ones() -> None:
    done = {f"history-{i}" for i in range(50)}
    order: list[str] = []
    all_done = asyncio.Event()

    async def reconcile(key: str) -> Result:
        order.append(key)
        if len(order) == 51:
            all_done.set()
        return Result.done()

    controller = Controller("c", reconcile, workers=1, finished=lambda key: key in done)
    for key in sorted(done):
        controller.enqueue(key)
    controller.enqueue("new-request")
    stop = asyncio.Event()
    running = asyncio.create_task(controller.run(stop))
    await asyncio.wait_for(all_done.wait(), 5)
    stop.set()
    await running
    assert order[0] == "new-request"
    assert sorted(order[1:]) == sorted(done)


async def test_an_add_of_a_queued_key_is_dropped() -> None:
    queue = WorkQueue("q", clock=FakeClock())
    queue.add("a")
    queue.add("a")
    queue.add_after("a", 0)
    assert ready(queue) == ["a"]


async def test_back_off_doubles_per_failure_up_to_the_cap_and_forget_resets_it() -> None:
    queue = WorkQueue("q", clock=FakeClock(), base_delay=1.0, max_delay=8.0)
    assert [queue.add_rate_limited("a") for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    assert queue.num_requeues("a") == 6
    assert queue.add_rate_limited("b") == 1  # per key
    queue.forget("a")
    assert queue.num_requeues("a") == 0
    assert queue.add_rate_limited("a") == 1


async def test_controller_backs_off_on_errors_and_resets_after_a_success() -> None:
    clock = FakeClock()
    outcomes = ["fail", "fail", "fail", "ok", "fail", "ok"]
    passes: list[float] = []

    async def reconcile(key: str) -> Result:
        passes.append(clock())
        if outcomes.pop(0) == "fail":
            raise RuntimeError("boom")
        return Result.done()

    errors = REGISTRY.get_sample_value("kubernaut_reconcile_errors_total", {"controller": "c"}) or 0.0
    controller = Controller("c", reconcile, workers=2, base_delay=1.0, max_delay=30.0, clock=clock)
    stop = asyncio.Event()
    running = asyncio.create_task(controller.run(stop))
    try:
        controller.enqueue("a")
        await settle()
        waits = []
        while outcomes:
            wait = controller.queue.release_due()
            if wait is None:  # a success with nothing pending: the next event starts a pass
                controller.enqueue("a")
                await settle()
                continue
            waits.append(wait)
            clock.advance(wait)
            controller.queue.release_due()
            await settle()
        assert waits == [1, 2, 4, 1]  # doubled per failure; after the success it starts at the base again
        assert REGISTRY.get_sample_value("kubernaut_reconcile_errors_total", {"controller": "c"}) == errors + 4
        assert len(passes) == 6
        assert controller.queue.num_requeues("a") == 0
        assert len(controller.queue) == 0
    finally:
        stop.set()
        await running


async def test_controller_requeue_after_keeps_the_earliest_deadline() -> None:
    clock = FakeClock()
    passes = 0

    async def reconcile(key: str) -> Result:
        nonlocal passes
        passes += 1
        return Result.after(60)

    controller = Controller("c", reconcile, workers=1, clock=clock)
    stop = asyncio.Event()
    running = asyncio.create_task(controller.run(stop))
    try:
        for _ in range(5):  # five events, five passes, each asking for a resync in 60s
            controller.enqueue("a")
            await settle()
        assert passes == 5
        assert len(controller.queue) == 1
        clock.advance(60)
        controller.queue.release_due()
        await settle()
        assert passes == 6  # one resync, not five
    finally:
        stop.set()
        await running


async def test_the_timer_releases_what_is_due_when_woken() -> None:
    clock = FakeClock()
    queue = WorkQueue("q", clock=clock)
    timer = asyncio.create_task(queue.run_timer())
    try:
        queue.add_after("a", 5)
        await settle()
        clock.advance(5)
        queue.add_after("b", 100)  # any add wakes the timer, which reads the clock again
        await settle()
        assert ready(queue) == ["a"]
        assert len(queue) == 1
    finally:
        timer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await timer


@pytest.mark.parametrize("racing_wakeup", [False, True])
async def test_the_timer_ends_on_cancellation_and_keeps_what_waits(racing_wakeup: bool) -> None:
    clock = FakeClock()
    queue = WorkQueue("q", clock=clock)
    queue.add_after("a", 5)
    timer = asyncio.create_task(queue.run_timer())
    await settle()
    if racing_wakeup:
        queue.add_after("b", 1)  # the wakeup is set in the same step as the cancellation
    timer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await timer
    assert timer.cancelled()
    assert len(queue) == (2 if racing_wakeup else 1)
    # a new timer picks the waiting keys up
    clock.advance(5)
    timer = asyncio.create_task(queue.run_timer())
    await settle()
    assert sorted(ready(queue)) == (["a", "b"] if racing_wakeup else ["a"])
    timer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await timer


async def test_an_unfinished_key_is_resynced_within_the_period_whatever_its_result() -> None:
    clock = FakeClock()
    passes: list[float] = []
    results = [Result.done(), Result.after(100), Result.after(5), Result.done()]

    async def reconcile(key: str) -> Result:
        passes.append(clock())
        return results.pop(0)

    controller = Controller("c", reconcile, workers=1, clock=clock, finished=lambda _key: False, resync_period=30)
    stop = asyncio.Event()
    running = asyncio.create_task(controller.run(stop))
    try:
        controller.enqueue("a")
        await settle()
        waits = []
        while results:
            wait = controller.queue.release_due()
            assert wait is not None  # an unfinished key always has its next pass scheduled
            waits.append(wait)
            clock.advance(wait)
            controller.queue.release_due()
            await settle()
        assert waits == [30, 30, 5]  # done: the period; 100 s asked: the period wins; 5 s asked: 5 s wins
        assert len(passes) == 4
        assert len(controller.queue) == 1  # and after the last pass too
    finally:
        stop.set()
        await running


async def test_a_finished_key_is_not_resynced() -> None:
    clock = FakeClock()
    finished = {"done": True, "open": False}
    passes: list[str] = []

    async def reconcile(key: str) -> Result:
        passes.append(key)
        return Result.done()

    controller = Controller("c", reconcile, workers=1, clock=clock, finished=finished.__getitem__, resync_period=30)
    stop = asyncio.Event()
    running = asyncio.create_task(controller.run(stop))
    try:
        controller.enqueue("done")
        controller.enqueue("open")
        await settle()
        assert sorted(passes) == ["done", "open"]
        assert controller.queue._deadlines.keys() == {"open"}
        clock.advance(3600)
        controller.queue.release_due()
        await settle()
        assert passes.count("done") == 1
        assert passes.count("open") == 2
    finally:
        stop.set()
        await running


def test_a_finished_key_keeps_only_the_pass_it_asked_for() -> None:
    controller = Controller("c", _never, finished=lambda _key: True, resync_period=30)
    assert controller.next_pass("a", Result.done()) is None
    assert controller.next_pass("a", Result.after(300)) == 300  # a cooldown's own wake-up, not the period


def test_without_a_finished_predicate_nothing_is_resynced() -> None:
    controller = Controller("c", _never, resync_period=30)
    assert controller.next_pass("a", Result.done()) is None
    assert controller.next_pass("a", Result.after(60)) == 60


async def test_a_failed_pass_is_retried_by_its_back_off_not_the_period() -> None:
    clock = FakeClock()

    async def reconcile(key: str) -> Result:
        raise RuntimeError("boom")

    controller = Controller(
        "c", reconcile, workers=1, clock=clock, base_delay=1.0, finished=lambda _key: False, resync_period=0.5
    )
    stop = asyncio.Event()
    running = asyncio.create_task(controller.run(stop))
    try:
        controller.enqueue("a")
        await settle()
        assert controller.queue.release_due() == 1.0
    finally:
        stop.set()
        await running


async def _never(key: str) -> Result:  # pragma: no cover - never reconciled
    raise AssertionError(key)

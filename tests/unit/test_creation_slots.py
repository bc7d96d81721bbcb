"""Creation slots: decisions go ahead together while the limits leave room for all of them, and one at
a time, after those in flight, once they do not."""

import asyncio

from kubernaut.controllers.slots import CreationSlots


class Limit:
    """`limit` executions at most; `landed` of them are in the cache."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.landed = 0

    def headroom(self, _namespace: str) -> int:
        return self.limit - self.landed


async def decide(slots: CreationSlots, limit: Limit, log: list[str], name: str, create: asyncio.Event) -> None:
    """A decision as the orchestrator makes it: it counts the cache, creates if the count is under the
    limit, and its execution lands in the cache once `create` is set."""
    async with slots.taken("ns"):
        if limit.landed >= limit.limit:
            log.append(f"{name} blocked")
            return
        log.append(f"{name} creating")
        await create.wait()
        limit.landed += 1
        log.append(f"{name} landed")


async def test_decisions_with_room_for_all_go_ahead_together() -> None:
    limit = Limit(10)
    slots = CreationSlots(limit.headroom)
    create, log = asyncio.Event(), []
    tasks = [asyncio.create_task(decide(slots, limit, log, f"d{i}", create)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert log == ["d0 creating", "d1 creating", "d2 creating"]  # none waited for another
    assert slots.in_flight == 3
    create.set()
    await asyncio.gather(*tasks)
    assert limit.landed == 3
    assert slots.in_flight == 0


async def test_no_two_decisions_take_the_last_free_slot() -> None:
    limit = Limit(3)
    slots = CreationSlots(limit.headroom)
    create, log = asyncio.Event(), []
    tasks = [asyncio.create_task(decide(slots, limit, log, f"d{i}", create)) for i in range(5)]
    await asyncio.sleep(0.01)
    # Room for three in flight; the fourth waits alone for them to land, the fifth behind it.
    assert log == ["d0 creating", "d1 creating", "d2 creating"]
    create.set()
    await asyncio.gather(*tasks)
    assert log[3:] == ["d0 landed", "d1 landed", "d2 landed", "d3 blocked", "d4 blocked"]
    assert limit.landed == 3


async def test_no_decision_overtakes_one_waiting_alone() -> None:
    limit = Limit(1)
    slots = CreationSlots(limit.headroom)
    create, log = asyncio.Event(), []
    first = asyncio.create_task(decide(slots, limit, log, "first", create))
    second = asyncio.create_task(decide(slots, limit, log, "second", create))  # no room: waits alone
    await asyncio.sleep(0.01)
    limit.limit = 5  # room appears, but `second` decides first, from a cache holding `first`'s
    third = asyncio.create_task(decide(slots, limit, log, "third", create))
    await asyncio.sleep(0.01)
    assert log == ["first creating"]
    create.set()
    await asyncio.gather(first, second, third)
    assert log == [
        "first creating",
        "first landed",
        "second creating",
        "second landed",
        "third creating",
        "third landed",
    ]


async def test_a_failed_creation_frees_its_slot() -> None:
    limit = Limit(1)
    slots = CreationSlots(limit.headroom)

    async def failing() -> None:
        async with slots.taken("ns"):
            raise RuntimeError("refused")

    results = await asyncio.gather(failing(), return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    assert slots.in_flight == 0
    log: list[str] = []
    create = asyncio.Event()
    create.set()
    await asyncio.wait_for(decide(slots, limit, log, "after", create), 1)  # neither waits nor blocks
    assert log == ["after creating", "after landed"]

"""The bell that wakes held calls: every waiter on a request wakes at once, others keep waiting, a wait times out."""

from uuid import UUID, uuid4

import anyio
import pytest

from approvals.waiting import DecisionWaiter

pytestmark = pytest.mark.anyio


async def test_a_notify_wakes_every_call_waiting_on_that_request_and_no_other() -> None:
    waiter, decided, other = DecisionWaiter(), uuid4(), uuid4()
    woke: dict[str, bool] = {}

    async def wait(name: str, request_id: UUID, within: float) -> None:
        woke[name] = await waiter.wait(request_id, within)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, "first", decided, 10)
            tg.start_soon(wait, "repeat", decided, 10)
            tg.start_soon(wait, "unrelated", other, 0.2)
            await anyio.sleep(0.05)
            waiter.notify(decided)

    assert woke == {"first": True, "repeat": True, "unrelated": False}


async def test_a_wait_that_times_out_says_so_and_a_cancelled_one_leaves_the_others_waiting() -> None:
    waiter, request_id = DecisionWaiter(), uuid4()
    woke: list[bool] = []

    async def wait() -> None:
        woke.append(await waiter.wait(request_id, 10))

    async def give_up() -> None:  # a held call whose client went away: its wait is cancelled
        with anyio.move_on_after(0.02):
            woke.append(await waiter.wait(request_id, 10))

    with anyio.fail_after(5):
        started = anyio.current_time()
        assert await waiter.wait(request_id, 0.05) is False
        assert anyio.current_time() - started < 1
        async with anyio.create_task_group() as tg:
            tg.start_soon(give_up)
            tg.start_soon(wait)
            await anyio.sleep(0.1)
            waiter.notify(request_id)
        waiter.notify(request_id)  # nobody waits any more: harmless

    assert woke == [True]

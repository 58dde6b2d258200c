"""`Deadline`, the hot path's timer: it gives up a wait, and never eats a cancellation that is not its own."""

import asyncio

import pytest

from integrations.gateway.deadline import Deadline

pytestmark = pytest.mark.anyio


async def test_a_wait_past_the_deadline_is_given_up_and_the_block_left_quietly() -> None:
    started = asyncio.get_running_loop().time()
    reached_after = False
    with Deadline(0.05) as deadline:
        await asyncio.sleep(10)
        reached_after = True
    assert deadline.expired and not reached_after
    assert asyncio.get_running_loop().time() - started < 5
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0)  # the task is not cancelled again at its next wait


async def test_a_block_that_ends_in_time_is_untouched_and_its_timer_gone() -> None:
    with Deadline(0.05) as deadline:
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)  # past the deadline: nothing fires
    assert not deadline.expired


async def test_a_cancellation_from_elsewhere_goes_through() -> None:
    async def waits() -> bool:
        with Deadline(10):
            await asyncio.sleep(10)
        return True

    task = asyncio.ensure_future(waits())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_another_cancellation_arriving_with_the_deadline_is_not_swallowed() -> None:
    async def waits() -> None:
        task = asyncio.current_task()
        assert task is not None
        with Deadline(0):
            asyncio.get_running_loop().call_soon(task.cancel)  # lands in the same turn as the deadline
            await asyncio.sleep(10)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.ensure_future(waits())


async def test_a_deadline_needs_a_task() -> None:
    loop = asyncio.get_running_loop()
    refused: asyncio.Future[str] = loop.create_future()

    def outside_any_task() -> None:  # a plain callback of the loop
        try:
            with Deadline(1):
                pass
        except RuntimeError as exc:
            refused.set_result(str(exc))

    loop.call_soon(outside_any_task)
    assert "needs a running task" in await refused

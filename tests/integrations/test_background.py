"""The write-behind queue under the audit writer, the tool-pin writer and the webhooks: order, batches, bad
items set aside, puts from worker threads, and a bounded close."""

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import anyio
import pytest

from integrations.background import Backoff, WriteBehind, retry_after

pytestmark = pytest.mark.anyio


class Sink:
    """A handler that keeps what it is given, refuses items named "bad", and can be made slow."""

    def __init__(self, pause: float = 0.0, expect: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.pause = pause
        self.expect = expect
        self.all_in = anyio.Event()  # set once `expect` items were handled

    async def handle(self, batch: Sequence[str]) -> int:
        if batch[0] == "bad":
            raise ValueError("bad is not storable")
        await anyio.sleep(self.pause)
        self.batches.append(list(batch))
        if len(self.items) >= self.expect:
            self.all_in.set()
        return len(batch)

    @property
    def items(self) -> list[str]:
        return [item for batch in self.batches for item in batch]


async def test_items_are_handled_in_order_in_batches_gathered_after_the_first() -> None:
    sink = Sink(expect=7)
    queue: WriteBehind[str] = WriteBehind("test", sink.handle, max_batch=3, gather=0.05)
    async with anyio.create_task_group() as tg:
        queue.start(tg)
        for i in range(7):
            queue.put(f"r{i}")
        with anyio.fail_after(5):
            await sink.all_in.wait()
        await queue.close()

    assert sink.items == [f"r{i}" for i in range(7)]
    assert [len(b) for b in sink.batches] == [3, 3, 1]
    assert queue.health() == {"ok": True, "queued": 0, "handled": 7, "set_aside": 0}


async def test_an_item_the_handler_raises_on_is_set_aside_with_why_and_the_rest_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Sink()
    queue: WriteBehind[str] = WriteBehind("pins", sink.handle)
    async with anyio.create_task_group() as tg:
        queue.start(tg)
        for item in ("a", "bad", "b"):
            queue.put(item)
        with anyio.fail_after(5):
            await queue.flush()
        await queue.close()

    assert sink.items == ["a", "b"]
    assert queue.set_aside == [("bad", "ValueError: bad is not storable")]
    assert queue.health()["ok"] is False and queue.health()["set_aside"] == 1
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged[0].getMessage() == "pins: an item could not be handled and is set aside" and logged[0].exc_info


async def test_handle_now_deals_with_the_queue_on_the_callers_task_unless_the_writer_is_busy() -> None:
    handling, release = anyio.Event(), anyio.Event()
    written: list[str] = []

    async def slow(batch: Sequence[str]) -> int:
        handling.set()
        await release.wait()
        written.extend(batch)
        return len(batch)

    queue: WriteBehind[str] = WriteBehind("audit", slow, max_batch=10)
    taken: list[list[str]] = []

    def take(batch: Sequence[str]) -> int:
        taken.append(list(batch))
        return len(batch) - 1  # the last one is left to the writer

    queue.put("a")
    queue.put("b")
    queue.handle_now(take)  # no writer running: done here, at once, without a loop turn
    assert taken == [["a", "b"]] and queue.handled == 1 and queue.items == ["b"]
    with anyio.fail_after(1):
        assert await queue.reached(1)  # its waiters need not wait for the writer either

    async with anyio.create_task_group() as tg:
        queue.start(tg)
        with anyio.fail_after(5):
            await handling.wait()  # the writer's task is handling "b"
            queue.handle_now(take)
            assert taken == [["a", "b"]]  # so nothing is taken from under it
            release.set()
            await queue.flush()
        await queue.close()

    assert written == ["b"] and queue.handled == 2


async def test_items_put_from_worker_threads_wake_the_writer() -> None:
    sink = Sink(expect=5)
    queue: WriteBehind[str] = WriteBehind("test", sink.handle, max_batch=100)
    async with anyio.create_task_group() as tg:
        queue.start(tg)
        await anyio.sleep(0.01)  # the writer is waiting for its first item
        for i in range(5):
            await anyio.to_thread.run_sync(queue.put, f"t{i}")
        with anyio.fail_after(5):
            await sink.all_in.wait()
        await queue.close()

    assert sink.items == [f"t{i}" for i in range(5)]


async def test_close_is_bounded_and_returns_what_was_left_oldest_first() -> None:
    sink = Sink(pause=0.3)
    queue: WriteBehind[str] = WriteBehind("slow", sink.handle, close_timeout=0.5)
    async with anyio.create_task_group() as tg:
        queue.start(tg)
        for i in range(10):
            queue.put(f"s{i}")
        with anyio.fail_after(5):  # the slow handler alone would need 3 s
            left = await queue.close()

    assert sink.items + left == [f"s{i}" for i in range(10)]
    assert 1 <= len(sink.items) <= 3
    assert queue.queued == 0


async def test_close_without_start_still_handles_what_was_queued() -> None:
    sink = Sink()
    queue: WriteBehind[str] = WriteBehind("never started", sink.handle)
    queue.put("x")
    queue.put("y")

    assert await queue.close() == []
    assert sink.items == ["x", "y"]


def test_backoff_doubles_from_first_up_to_most_and_honours_what_was_asked_up_to_most() -> None:
    backoff = Backoff(0.5, 4.0)

    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert backoff.delay(1, asked=3.0) == 3.0 and backoff.delay(1, asked=3600.0) == 4.0
    with pytest.raises(ValueError, match="need 0 <= first <= most"):
        Backoff(2.0, 1.0)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("Wed, 02 Dec 2026 10:00:30 GMT", 30.0),  # an HTTP date, against the wall clock given
        ("Wed, 02 Dec 2026 09:59:00 GMT", 0.0),  # already past: no wait
        ("soon", None),
        ("-5", None),
        ("²", None),  # a digit to str.isdigit, not to HTTP
        (None, None),
    ],
)
def test_retry_after_reads_seconds_or_an_http_date(header: str | None, seconds: float | None) -> None:
    now = datetime(2026, 12, 2, 10, 0, 0, tzinfo=UTC).timestamp()

    assert retry_after(header, now) == seconds


def test_a_put_after_the_writers_loop_has_ended_keeps_the_item_and_does_not_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = Sink()

    async def serve_and_stop() -> WriteBehind[str]:
        queue: WriteBehind[str] = WriteBehind("late", sink.handle)
        async with anyio.create_task_group() as tg:
            queue.start(tg)
            queue.put("a")
            await queue.flush()
            tg.cancel_scope.cancel()  # the loop ends without close(): a crash, a test's loop torn down
        return queue

    queue = asyncio.run(serve_and_stop())
    queue.put("b")  # on the same thread, its loop closed

    assert sink.items == ["a"] and queue.items == ["b"]
    assert "an item was queued while signoff is stopping" in caplog.text

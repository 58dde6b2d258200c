"""Event streams as the gateway reads them: any line ending SSE allows, split anywhere across chunks."""

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from integrations.gateway.sse import Cursor, rewrite_events
from integrations.gateway.wire import Message

pytestmark = pytest.mark.anyio

# A priming event, a notification, the response (id 7) and a comment, with each of the three line endings.
STREAM = (
    b"id: e1\r\nretry: 500\r\ndata:\r\n\r\n"
    b'event: message\rdata: {"jsonrpc":"2.0","method":"notifications/progress","params":{"progress":1}}\r\r'
    b'id: e2\ndata: {"jsonrpc":"2.0","id":7,\ndata: "result":{"content":[]}}\n\n'
    b": keep-alive\r\n\r\n"
)


def marked(message: Message) -> Message:
    return {**message, "result": {"seen": True}}


async def read(chunks: list[bytes]) -> tuple[list[list[str]], Cursor]:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    cursor = Cursor()
    out = b"".join([piece async for piece in rewrite_events(source(), 7, marked, cursor)])
    events = [event.split("\n") for event in out.decode().split("\n\n") if event]
    return events, cursor


def data_of(event: list[str]) -> Any:
    return json.loads("\n".join(line[5:].strip() for line in event if line.startswith("data:")))


async def test_every_line_ending_is_read_and_only_the_response_is_rewritten() -> None:
    events, cursor = await read([STREAM])

    assert len(events) == 4
    assert events[0] == ["id: e1", "retry: 500", "data:"]
    assert data_of(events[1])["method"] == "notifications/progress"
    assert data_of(events[2]) == {"jsonrpc": "2.0", "id": 7, "result": {"seen": True}}
    assert events[3] == [": keep-alive"]
    assert (cursor.last_id, cursor.retry_ms, cursor.messages) == ("e2", 500, 2)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
async def test_a_stream_split_into_chunks_anywhere_reads_as_the_same_events(size: int) -> None:
    whole, _ = await read([STREAM])
    for offset in range(size):  # every place a line ending can be cut, \r\n halves included
        chunks = [STREAM[:offset]] + [STREAM[i : i + size] for i in range(offset, len(STREAM), size)]
        assert (await read([c for c in chunks if c]))[0] == whole


async def test_an_unfinished_last_event_is_still_delivered_when_the_stream_ends() -> None:
    events, _ = await read([b'data: {"jsonrpc":"2.0","id":7,"result":{}}'])  # no blank line after it
    assert data_of(events[0]) == {"jsonrpc": "2.0", "id": 7, "result": {"seen": True}}

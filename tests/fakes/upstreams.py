"""Upstream MCP servers for the gateway's tests, and a loopback uvicorn fixture helper.

These are real `MCPServer`s speaking the real protocol (in memory or over Streamable HTTP);
they hold no policy and know nothing about signoff.
"""

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import uvicorn
from mcp.server.caching import CacheableMethod, CacheHint
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import (
    Completion,
    CompletionArgument,
    CompletionContext,
    PromptReference,
    ResourceTemplateReference,
    ToolAnnotations,
)
from pydantic import BaseModel
from starlette.types import ASGIApp

from tests.fakes.conformance_server import MemoryEventStore

__all__ = [
    "EverythingState",
    "build_everything_server",
    "everything_http_app",
    "files_http_app",
    "polling_http_app",
    "serve_http",
]

TOPICS = ["approvals", "audit", "gateways", "policies"]


@dataclass
class EverythingState:
    """What the everything server's side-effecting tools did, for tests to assert on."""

    counter: int = 0
    deleted_records: list[str] = field(default_factory=list)
    dropped_tables: list[str] = field(default_factory=list)


class Confirmation(BaseModel):
    confirmed: bool


def build_everything_server(state: EverythingState | None = None, *, public_lists: bool = False) -> MCPServer:
    """A server with one of each MCP feature; pass `state` to observe its side effects. With `public_lists`, its
    2026-07-28 `tools/list` results say `cacheScope: "public"` (the SDK's default is "private")."""
    state = state if state is not None else EverythingState()
    hints: dict[CacheableMethod, CacheHint] | None = None
    if public_lists:
        hints = {"tools/list": CacheHint(ttl_ms=60_000, scope="public")}
    server = MCPServer("everything", version="1.0.0", cache_hints=hints)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True), description="Echo the text back.")
    def echo(text: str) -> str:
        return text

    @server.tool(annotations=ToolAnnotations(read_only_hint=True), description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Always fail with the given message.")
    def fail(message: str) -> str:
        raise ToolError(message)

    @server.tool(description="Report `steps` progress notifications, then return.")
    async def slow_count(steps: int, ctx: Context) -> str:
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step} of {steps}")
        return f"counted to {steps}"

    @server.tool(description="Increment the server's counter and return it.")
    def counter() -> int:
        state.counter += 1
        return state.counter

    @server.tool(annotations=ToolAnnotations(destructive_hint=True), description="Delete one record.")
    def delete_record(record_id: str) -> str:
        state.deleted_records.append(record_id)
        return f"deleted record {record_id}"

    @server.tool(annotations=ToolAnnotations(destructive_hint=True), description="Drop a table.")
    def drop_table(name: str) -> str:
        state.dropped_tables.append(name)
        return f"dropped table {name}"

    @server.tool(description="Ask the user to confirm through elicitation, then say what they answered.")
    async def confirm(question: str, ctx: Context) -> str:
        answer = await ctx.elicit(question, Confirmation)
        if answer.action == "accept" and answer.data is not None:
            return f"confirmed={answer.data.confirmed}"
        return f"action={answer.action}"

    @server.resource("test://greeting", name="greeting", mime_type="text/plain")
    def greeting() -> str:
        return "Hello from the everything server"

    @server.resource("test://items/{item_id}", name="item", mime_type="text/plain")
    def item(item_id: str) -> str:
        return f"item {item_id}"

    @server.prompt(description="Ask for a summary of a topic.")
    def summarize(topic: str) -> str:
        return f"Summarize what you know about {topic}."

    @server.completion()  # type: ignore[no-untyped-call, untyped-decorator]  # the SDK leaves this decorator untyped
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion | None:
        if isinstance(ref, PromptReference) and ref.name == "summarize" and argument.name == "topic":
            return Completion(values=[t for t in TOPICS if t.startswith(argument.value)])
        return None

    return server


def everything_http_app(state: EverythingState | None = None, *, public_lists: bool = False) -> ASGIApp:
    """The everything server over Streamable HTTP at `/mcp`, stateful, answering with SSE.

    Each call builds a new server: a session manager runs only once.
    """
    return build_everything_server(state, public_lists=public_lists).streamable_http_app(streamable_http_path="/mcp")


FILES_DESCRIPTION = "Create or overwrite a file with the given content. Overwrites without asking."


def files_http_app(written: dict[str, str]) -> ASGIApp:
    """A file server's one tool, `write_file(path, content)`, over Streamable HTTP at `/mcp`; what it wrote lands
    in `written` (path -> content)."""
    server = MCPServer("files", version="1.0.0")

    @server.tool(annotations=ToolAnnotations(destructive_hint=True), description=FILES_DESCRIPTION)
    def write_file(path: str, content: str) -> str:
        written[path] = content
        return f"wrote {len(content)} characters to {path}"

    return server.streamable_http_app(streamable_http_path="/mcp")


def polling_http_app(retry_ms: int = 50) -> ASGIApp:
    """A server that ends a call's event stream mid-call for the client to poll (SEP-1699, from 2025-11-25).

    Streamable HTTP at `/mcp` with an event store, so a GET with `Last-Event-ID` resumes the stream, and a priming
    event asking clients to reconnect after `retry_ms`. Its one tool, `poll`, reports progress and ends its stream
    `times` times, then answers; the events sent while no stream was open wait in the store.
    """
    server = MCPServer("polling", version="1.0.0")

    @server.tool(description="Report progress and end the call's event stream `times` times, then answer.")
    async def poll(times: int, ctx: Context) -> str:
        for round_ in range(1, times + 1):
            await ctx.report_progress(round_, times, f"round {round_} of {times}")
            await ctx.close_sse_stream()
            await anyio.sleep(retry_ms / 1000 * 2)  # the client reconnects meanwhile
        return f"polled {times} times"

    return server.streamable_http_app(
        streamable_http_path="/mcp", event_store=MemoryEventStore(), retry_interval=retry_ms
    )


def loopback_socket() -> socket.socket:
    """A socket bound to a free loopback port, for `serve_http` (bound first when the URL must be known early)."""
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it every
    # response waits ~40 ms for a delayed ACK (uvicorn writes the head and the body separately).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serve_http(app: ASGIApp, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve any ASGI app with uvicorn on a free loopback port (or on `sock`), lifespan on; yield its base URL."""
    sock = sock or loopback_socket()
    port = sock.getsockname()[1]
    # log_config=None: uvicorn's own errors propagate to the root logger, where pytest's caplog sees them.
    config = uvicorn.Config(app, lifespan="on", log_level="warning", ws="none", log_config=None)
    server = uvicorn.Server(config)
    with sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                with anyio.fail_after(10):
                    # The one allowed poll: uvicorn exposes `started` as a flag, not an event.
                    while not server.started:  # noqa: ASYNC110
                        await anyio.sleep(0.01)
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True

"""A stdio MCP server for the tests of one child shared by many sessions: it talks back while it works.

It behaves as the SDK's servers do over stdio, where no message names the request it belongs to: a tool
logs a per-request secret and reports progress while its request is in flight, sends resource updates
to whoever subscribed, asks the client to sample, and hangs until cancelled. It honours
`logging/setLevel` and `resources/subscribe` as a real server would (one client: the last level wins),
and `state` tells a test what it was told (its level, its subscriptions, which hung calls were cancelled).
"""

import json
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

warnings.simplefilter("ignore")  # logging, sampling and subscriptions are deprecated in 2026-07-28; this child is older

LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
STATE: dict[str, Any] = {"level": None, "subscriptions": [], "hanging": [], "cancelled": [], "released": []}
RELEASE: dict[str, anyio.Event] = {}
TOOLS = {
    "whisper": "Log `secret` at `level` (default info) and report progress while the call runs.",
    "ask": "Ask the client to sample a reply to `question`.",
    "confirm": "Ask the user (form elicitation) to confirm `what`.",
    "link": "Send the user to a URL (URL elicitation `key`), and end it after the call returns.",
    "touch": "Tell subscribers that resource `uri` changed.",
    "later": "After the call returns, log `text` at `level` and send tools/list_changed.",
    "hang": "Wait until cancelled or released; `key` names the call.",
    "release": "Let the hung call `key` return.",
    "state": "What the server was told: its log level, its subscriptions, the hung calls cancelled.",
}


def _text(text: str, *, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=error)


def _allowed(level: str) -> bool:
    current = STATE["level"]
    return current is None or LEVELS.index(level) >= LEVELS.index(current)


@asynccontextmanager
async def lifespan(_: Server[Any]) -> AsyncIterator[dict[str, Any]]:
    async with anyio.create_task_group() as tg:
        yield {"tg": tg}
        tg.cancel_scope.cancel()


async def list_tools(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    schema = {"type": "object", "additionalProperties": True}
    return types.ListToolsResult(
        tools=[types.Tool(name=name, description=text, input_schema=schema) for name, text in TOOLS.items()]
    )


async def call_tool(ctx: ServerRequestContext[Any], params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    session = ctx.session
    match params.name:
        case "whisper":
            level = args.get("level", "info")
            if _allowed(level):
                await session.send_log_message(level, f"secret {args['secret']}", related_request_id=ctx.request_id)
            await session.report_progress(1, 2, f"whispering {args['secret']}")
            return _text("whispered")
        case "ask":
            try:
                reply = await session.create_message(
                    [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=args["question"]))],
                    max_tokens=20,
                    related_request_id=ctx.request_id,
                )
            except Exception as exc:
                return _text(f"sampling failed: {exc}", error=True)
            content = reply.content
            return _text(f"sampled: {content.text if isinstance(content, types.TextContent) else content}")
        case "confirm":
            schema: types.ElicitRequestedSchema = {
                "type": "object",
                "properties": {"ok": {"type": "boolean"}},
                "required": ["ok"],
            }
            try:
                answer = await session.elicit_form(
                    f"confirm {args['what']}?", schema, related_request_id=ctx.request_id
                )
            except Exception as exc:
                return _text(f"elicitation failed: {exc}", error=True)
            return _text(f"{answer.action}: {json.dumps(answer.content)}")
        case "link":  # a URL elicitation, ended out of band after the call returns
            key = args["key"]
            link = await session.elicit_url(f"open {key}", f"https://example.test/{key}", key, ctx.request_id)

            async def complete() -> None:
                await anyio.sleep(0.2)  # after the response is written: the end belongs to no request
                await session.send_elicit_complete(key)

            ctx.lifespan_context["tg"].start_soon(complete)
            return _text(link.action)
        case "touch":
            if args["uri"] in STATE["subscriptions"]:
                await session.send_resource_updated(args["uri"])
            return _text("touched")
        case "later":

            async def afterwards() -> None:
                await anyio.sleep(0.2)  # after the response is written: a message that belongs to no request
                if _allowed(args["level"]):
                    await session.send_log_message(args["level"], args["text"])
                await session.send_tool_list_changed()

            ctx.lifespan_context["tg"].start_soon(afterwards)
            return _text("scheduled")
        case "hang":
            key = args["key"]
            RELEASE[key] = anyio.Event()
            STATE["hanging"].append(key)
            await session.report_progress(0, 1, f"hanging {key}")
            try:
                await RELEASE[key].wait()
            except anyio.get_cancelled_exc_class():
                STATE["cancelled"].append(key)
                raise
            finally:
                STATE["hanging"].remove(key)
            STATE["released"].append(key)
            return _text(f"released {key}")
        case "release":
            RELEASE.setdefault(args["key"], anyio.Event()).set()
            return _text("released")
        case "state":
            return _text(json.dumps(STATE))
    return _text(f"no tool {params.name}", error=True)


async def set_level(ctx: ServerRequestContext[Any], params: types.SetLevelRequestParams) -> types.EmptyResult:
    STATE["level"] = params.level
    return types.EmptyResult()


async def subscribe(ctx: ServerRequestContext[Any], params: types.SubscribeRequestParams) -> types.EmptyResult:
    if params.uri not in STATE["subscriptions"]:
        STATE["subscriptions"].append(params.uri)
    return types.EmptyResult()


async def unsubscribe(ctx: ServerRequestContext[Any], params: types.UnsubscribeRequestParams) -> types.EmptyResult:
    if params.uri in STATE["subscriptions"]:
        STATE["subscriptions"].remove(params.uri)
    return types.EmptyResult()


async def list_resources(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
) -> types.ListResourcesResult:
    return types.ListResourcesResult(
        resources=[types.Resource(uri="note://a", name="a"), types.Resource(uri="note://b", name="b")]
    )


server = Server(
    "shared-child",
    lifespan=lifespan,
    on_list_tools=list_tools,
    on_call_tool=call_tool,
    on_set_logging_level=set_level,
    on_subscribe_resource=subscribe,
    on_unsubscribe_resource=unsubscribe,
    on_list_resources=list_resources,
)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)

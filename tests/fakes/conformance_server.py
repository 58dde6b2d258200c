"""The conformance fixture: an MCP server with every tool, resource and prompt the official conformance suite asks for.

What each piece returns is what the suite's server scenarios check (`src/scenarios/server/*.ts` in
`@modelcontextprotocol/conformance`, shipped built in its npm package). It holds no policy and knows nothing about
signoff, so the suite can run against it directly and through signoff, and the two results compared
(`tests/conformance.py`). Serve it over Streamable HTTP with `python -m tests.fakes.conformance_server --port 3001`
(at `/mcp`), or as a stdio child with `--stdio`.
"""

import argparse
import base64
import json
from typing import Annotated, Any

import anyio
import uvicorn
from mcp.server import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer, RequestStateSecurity
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp.server.mcpserver.tools import Tool
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.shared.exceptions import MCPError
from mcp.types import (
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    AudioContent,
    Completion,
    CompletionArgument,
    CompletionContext,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    EmbeddedResource,
    EmptyResult,
    ImageContent,
    InputRequest,
    InputRequiredResult,
    JSONRPCMessage,
    ListRootsRequest,
    ListRootsResult,
    PromptReference,
    ResourceTemplateReference,
    SamplingMessage,
    SetLevelRequestParams,
    SubscribeRequestParams,
    TextContent,
    TextResourceContents,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field, JsonValue
from starlette.types import ASGIApp

__all__ = ["build_conformance_server", "conformance_http_app", "main"]

# A 1x1 PNG and a silent WAV: the suite checks the type, MIME type and that `data` is base64, not the picture.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
WAV = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

# RequestStateSecurity wants 32 bytes or more; a fixture's key may be fixed (every replica must share a real one).
REQUEST_STATE_KEY = b"signoff-conformance-fixture-request-state"

NAME_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
CONFIRM_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}

# json-schema-2020-12 (SEP-1613) lists the tool and checks that every one of these keywords survives.
SCHEMA_2020_12: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {
        "address": {
            "$anchor": "addressDef",
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
        }
    },
    "properties": {
        "name": {"type": "string"},
        "address": {"$ref": "#/$defs/address"},
        "contactMethod": {"type": "string", "enum": ["phone", "email"]},
        "phone": {"type": "string"},
        "email": {"type": "string"},
    },
    "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
    "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
    "then": {"required": ["phone"]},
    "else": {"required": ["email"]},
    "additionalProperties": False,
}


class Reply(BaseModel):
    response: str = Field(description="What the user answered")


class Defaults(BaseModel):
    """elicitation-sep1034-defaults: a default for each primitive type."""

    name: str = Field(default="John Doe", description="User name")
    age: int = Field(default=30, description="User age")
    score: float = Field(default=95.5, description="User score")
    status: str = Field(
        default="active", description="User status", json_schema_extra={"enum": ["active", "inactive", "pending"]}
    )
    verified: bool = Field(default=True, description="Verification status")


def _titled(options: dict[str, str]) -> list[JsonValue]:
    return [{"const": const, "title": title} for const, title in options.items()]


class Enums(BaseModel):
    """elicitation-sep1330-enums: the five enum shapes of SEP-1330."""

    untitledSingle: str = Field(
        description="Single choice, untitled", json_schema_extra={"enum": ["option1", "option2", "option3"]}
    )
    titledSingle: str = Field(
        description="Single choice, titled",
        json_schema_extra={
            "oneOf": _titled({"value1": "First Option", "value2": "Second Option", "value3": "Third Option"})
        },
    )
    legacyEnum: str = Field(
        description="Legacy titled enum",
        json_schema_extra={"enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"]},
    )
    untitledMulti: list[str] = Field(
        description="Multiple choice, untitled",
        json_schema_extra={"items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
    )
    titledMulti: list[str] = Field(
        description="Multiple choice, titled",
        json_schema_extra={
            "items": {"anyOf": _titled({"value1": "First Choice", "value2": "Second Choice", "value3": "Third Choice"})}
        },
    )


class MemoryEventStore(EventStore):
    """Every event of every stream, so a client that lost a stream can resume it (server-sse-polling, SEP-1699)."""

    def __init__(self) -> None:
        self._events: list[tuple[str, str, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(len(self._events) + 1)
        self._events.append((stream_id, event_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: str, send_callback: EventCallback) -> str | None:
        stream = next((stream for stream, event_id, _ in self._events if event_id == last_event_id), None)
        if stream is None:
            return None
        for stream_id, event_id, message in self._events[int(last_event_id) :]:
            if stream_id == stream and message is not None:  # None marks a priming event: nothing to replay
                await send_callback(EventMessage(message, event_id))
        return stream


def _ask(message: str, schema: dict[str, Any] = NAME_SCHEMA) -> ElicitRequest:
    return ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=schema))


def _sample(text: str, max_tokens: int = 100) -> CreateMessageRequest:
    messages = [SamplingMessage(role="user", content=TextContent(type="text", text=text))]
    return CreateMessageRequest(params=CreateMessageRequestParams(messages=messages, max_tokens=max_tokens))


def _answer(responses: dict[str, Any] | None, key: str, field: str) -> Any:
    """The `field` of an accepted elicitation answer under `key`, or None."""
    answer = (responses or {}).get(key)
    return answer.content.get(field) if isinstance(answer, ElicitResult) and answer.content else None


def _schema_2020_12_tool() -> str:
    """A tool whose input schema uses JSON Schema 2020-12 keywords (SEP-1613)."""
    return "json_schema_2020_12_tool"


def build_conformance_server() -> MCPServer:
    """A fresh fixture server: every tool, resource and prompt the conformance suite calls, with its own state."""
    schema_tool = Tool.from_function(_schema_2020_12_tool, name="json_schema_2020_12_tool")
    server = MCPServer(
        "signoff-conformance-fixture",
        version="1.0.0",
        log_level="WARNING",  # the SDK configures logging at this level; INFO drowns the suite's output
        tools=[schema_tool.model_copy(update={"parameters": SCHEMA_2020_12})],
        request_state_security=RequestStateSecurity(keys=[REQUEST_STATE_KEY]),
    )
    subscriptions: set[str] = set()
    _add_content_tools(server)
    _add_client_request_tools(server)
    _add_input_required_tools(server)
    _add_resources(server)
    _add_prompts(server)

    async def set_level(ctx: ServerRequestContext, params: SetLevelRequestParams) -> EmptyResult:
        return EmptyResult()

    async def subscribe(ctx: ServerRequestContext, params: SubscribeRequestParams) -> EmptyResult:
        subscriptions.add(str(params.uri))
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext, params: UnsubscribeRequestParams) -> EmptyResult:
        subscriptions.discard(str(params.uri))
        return EmptyResult()

    # MCPServer has no public hook for these three yet; the low-level server's registry is the documented seam.
    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("logging/setLevel", SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)

    @server.completion()  # type: ignore[no-untyped-call, untyped-decorator]  # the SDK leaves this decorator untyped
    async def complete(
        ref: PromptReference | ResourceTemplateReference,
        argument: CompletionArgument,
        context: CompletionContext | None,
    ) -> Completion:
        return Completion(values=[], total=0, has_more=False)

    return server


def _add_content_tools(server: MCPServer) -> None:
    @server.tool(description="Return a simple text")
    def test_simple_text() -> str:
        return "This is a simple text response for testing."

    @server.tool(description="Return an image")
    def test_image_content() -> list[ImageContent]:
        return [ImageContent(type="image", data=PNG, mime_type="image/png")]

    @server.tool(description="Return audio")
    def test_audio_content() -> list[AudioContent]:
        return [AudioContent(type="audio", data=WAV, mime_type="audio/wav")]

    @server.tool(description="Return an embedded resource")
    def test_embedded_resource() -> list[EmbeddedResource]:
        text = TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text="This is an embedded resource content."
        )
        return [EmbeddedResource(type="resource", resource=text)]

    @server.tool(description="Return text, an image and an embedded resource")
    def test_multiple_content_types() -> list[TextContent | ImageContent | EmbeddedResource]:
        data = TextResourceContents(
            uri="test://mixed-content-resource", mime_type="application/json", text='{"test": "data", "value": 123}'
        )
        return [
            TextContent(type="text", text="Multiple content types test:"),
            ImageContent(type="image", data=PNG, mime_type="image/png"),
            EmbeddedResource(type="resource", resource=data),
        ]

    @server.tool(description="Log three messages while running")
    async def test_tool_with_logging(ctx: Context) -> str:
        for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
            await ctx.log("info", message)
            await anyio.sleep(0.05)
        return "Tool with logging executed successfully"

    @server.tool(description="Report progress 0, 50 and 100 of 100")
    async def test_tool_with_progress(ctx: Context) -> str:
        for step in (0, 50, 100):
            await ctx.report_progress(step, 100, f"Completed step {step} of 100")
            await anyio.sleep(0.05)
        meta = ctx.request_context.meta
        return str(meta.get("progress_token", 0) if meta else 0)

    @server.tool(description="Fail on purpose")
    def test_error_handling() -> str:
        raise ToolError("This tool intentionally returns an error for testing")

    @server.tool(description="Close the request's SSE stream mid-call, then log and answer (SEP-1699)")
    async def test_reconnection(ctx: Context) -> str:
        await ctx.log("info", "Before disconnect")
        await ctx.close_sse_stream()
        await anyio.sleep(0.2)  # the client reconnects with Last-Event-ID meanwhile
        await ctx.log("info", "After reconnect")
        return "Reconnection test completed"

    @server.tool(description="Echo the region, which the client mirrors into an Mcp-Param-Region header (SEP-2243)")
    def test_x_mcp_header(
        region: Annotated[str, Field(description="The region", json_schema_extra={"x-mcp-header": "Region"})] = "none",
    ) -> str:
        return f"region={region}"

    @server.tool(description="Change the tool list and announce it (SEP-2575)")
    async def test_trigger_tool_change(ctx: Context) -> str:
        await ctx.notify_tools_changed()
        return "tool list changed"

    @server.tool(description="Change the prompt list and announce it (SEP-2575)")
    async def test_trigger_prompt_change(ctx: Context) -> str:
        await ctx.notify_prompts_changed()
        return "prompt list changed"


def _add_client_request_tools(server: MCPServer) -> None:
    """Tools that ask the client something mid-call: sampling and elicitation (handshake revisions)."""

    @server.tool(description="Ask the client's model to complete the prompt")
    async def test_sampling(prompt: str, ctx: Context) -> str:
        result = await ctx.session.create_message(
            messages=[SamplingMessage(role="user", content=TextContent(type="text", text=prompt))],
            max_tokens=100,
            related_request_id=ctx.request_id,  # else it goes to the GET stream, which may not be open
        )
        text = result.content.text if isinstance(result.content, TextContent) else "No response"
        return f"LLM response: {text}"

    @server.tool(description="Ask the user for a reply")
    async def test_elicitation(message: str, ctx: Context) -> str:
        result = await ctx.elicit(message=message, schema=Reply)
        content = result.data.model_dump_json() if result.action == "accept" else "{}"
        return f"User response: action={result.action}, content={content}"

    @server.tool(description="Elicit with a default for each primitive type (SEP-1034)")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> str:
        result = await ctx.elicit(message="Please provide user information", schema=Defaults)
        content = result.data.model_dump_json() if result.action == "accept" else "{}"
        return f"Elicitation result: action={result.action}, content={content}"

    @server.tool(description="Elicit with each enum shape (SEP-1330)")
    async def test_elicitation_sep1330_enums(ctx: Context) -> str:
        result = await ctx.elicit(message="Please choose", schema=Enums)
        content = result.data.model_dump_json() if result.action == "accept" else "{}"
        return f"Elicitation completed: action={result.action}, content={content}"

    @server.tool(description="Needs the client's sampling capability, else a -32003 error")
    async def test_missing_capability(ctx: Context) -> str:
        capabilities = ctx.session.client_capabilities
        if capabilities is None or capabilities.sampling is None:
            # An MCPError is not wrapped in an isError result: the client sees the JSON-RPC error.
            raise MCPError(
                code=MISSING_REQUIRED_CLIENT_CAPABILITY,
                message="This tool requires the client's sampling capability",
                data={"requiredCapabilities": {"sampling": {}}},
            )
        return "sampling is declared"


def _add_input_required_tools(server: MCPServer) -> None:
    """2026-07-28 multi-round-trip tools (SEP-2322): answer InputRequiredResult until the inputs come back."""

    @server.tool(description="One elicitation")
    async def test_input_required_result_elicitation(ctx: Context) -> str | InputRequiredResult:
        if ctx.input_responses and "user_name" in ctx.input_responses:
            return f"Hello, {_answer(ctx.input_responses, 'user_name', 'name') or 'stranger'}!"
        return InputRequiredResult(input_requests={"user_name": _ask("What is your name?")})

    @server.tool(description="One sampling request")
    async def test_input_required_result_sampling(ctx: Context) -> str | InputRequiredResult:
        answer = (ctx.input_responses or {}).get("capital_question")
        if isinstance(answer, CreateMessageResult):
            return f"Model said: {answer.content.text if isinstance(answer.content, TextContent) else '?'}"
        return InputRequiredResult(input_requests={"capital_question": _sample("What is the capital of France?")})

    @server.tool(description="One roots/list request")
    async def test_input_required_result_list_roots(ctx: Context) -> str | InputRequiredResult:
        answer = (ctx.input_responses or {}).get("client_roots")
        if isinstance(answer, ListRootsResult):
            return f"Client exposed {len(answer.roots)} root(s)."
        return InputRequiredResult(input_requests={"client_roots": ListRootsRequest()})

    @server.tool(description="Round-trips a requestState")
    async def test_input_required_result_request_state(ctx: Context) -> str | InputRequiredResult:
        if ctx.input_responses and "confirm" in ctx.input_responses and ctx.request_state == "request-state-nonce":
            return "state-ok: confirmation received"
        return InputRequiredResult(
            input_requests={"confirm": _ask("Please confirm", CONFIRM_SCHEMA)}, request_state="request-state-nonce"
        )

    @server.tool(description="An elicitation, a sampling and a roots request at once")
    async def test_input_required_result_multiple_inputs(ctx: Context) -> str | InputRequiredResult:
        if ctx.input_responses and {"user_name", "greeting", "client_roots"} <= ctx.input_responses.keys():
            return "All inputs received."
        requests: dict[str, InputRequest] = {
            "user_name": _ask("What is your name?"),
            "greeting": _sample("Generate a greeting", 50),
            "client_roots": ListRootsRequest(),
        }
        return InputRequiredResult(input_requests=requests, request_state="multiple-inputs")

    @server.tool(description="Three rounds, the state carried in requestState")
    async def test_input_required_result_multi_round(ctx: Context) -> str | InputRequiredResult:
        state = json.loads(ctx.request_state) if ctx.request_state else {"round": 0}
        responses = ctx.input_responses or {}
        if state.get("round") == 1 and "step1" in responses:
            name = _answer(responses, "step1", "name")
            color = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
            return InputRequiredResult(
                input_requests={"step2": _ask("Step 2: What is your favorite color?", color)},
                request_state=json.dumps({"round": 2, "name": name}),
            )
        if state.get("round") == 2 and "step2" in responses:
            return f"{state.get('name')} likes {_answer(responses, 'step2', 'color')}."
        # The first round, or an answer missing or out of order: start again.
        return InputRequiredResult(
            input_requests={"step1": _ask("Step 1: What is your name?")}, request_state=json.dumps({"round": 1})
        )

    @server.tool(description="Echoes requestState; the SDK refuses a tampered one before this runs")
    async def test_input_required_result_tampered_state(ctx: Context) -> str | InputRequiredResult:
        if ctx.request_state is None:
            return InputRequiredResult(
                input_requests={"confirm": _ask("Please confirm", CONFIRM_SCHEMA)}, request_state="round-1"
            )
        return f"state-ok: {ctx.request_state}"

    @server.tool(description="Asks only for what the client declared it can answer")
    async def test_input_required_result_capabilities(ctx: Context) -> InputRequiredResult:
        capabilities = ctx.client_capabilities
        requests: dict[str, InputRequest] = {}
        if capabilities is None or capabilities.sampling is not None:
            requests["sample"] = _sample("Say hello", 50)
        if capabilities is None or capabilities.elicitation is not None:
            requests["ask"] = _ask("What is your name?")
        return InputRequiredResult(input_requests=requests, request_state="capability-gated")

    @server.prompt(description="A prompt that needs an elicitation first (SEP-2322 outside tools/call)")
    async def test_input_required_result_prompt(ctx: Context) -> list[Message] | InputRequiredResult:
        if ctx.input_responses and "user_context" in ctx.input_responses:
            text = _answer(ctx.input_responses, "user_context", "context") or "?"
            return [UserMessage(f"Use the following context: {text}")]
        schema = {"type": "object", "properties": {"context": {"type": "string"}}, "required": ["context"]}
        return InputRequiredResult(input_requests={"user_context": _ask("What context should the prompt use?", schema)})


def _add_resources(server: MCPServer) -> None:
    @server.resource("test://static-text", name="static-text", mime_type="text/plain")
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", name="static-binary", mime_type="image/png")
    def static_binary() -> bytes:
        return base64.b64decode(PNG)

    @server.resource("test://template/{id}/data", name="template", mime_type="application/json")
    def template(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource("test://watched-resource", name="watched-resource", mime_type="text/plain")
    def watched() -> str:
        return "Watched resource content"


def _add_prompts(server: MCPServer) -> None:
    @server.prompt(description="A prompt without arguments")
    def test_simple_prompt() -> list[Message]:
        return [UserMessage("This is a simple prompt for testing.")]

    @server.prompt(description="A prompt with two required arguments")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[Message]:
        return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @server.prompt(description="A prompt that embeds a resource")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[Message]:
        text = TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(EmbeddedResource(type="resource", resource=text)),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt(description="A prompt with an image")
    def test_prompt_with_image() -> list[Message]:
        return [
            UserMessage(ImageContent(type="image", data=PNG, mime_type="image/png")),
            UserMessage("Please analyze the image above."),
        ]


def conformance_http_app() -> ASGIApp:
    """The fixture over Streamable HTTP at `/mcp`, stateful, resumable (an event store, retry 100 ms).

    Serve it with uvicorn's h11 parser (`http="h11"`): httptools keeps the whitespace around a header's value, which
    RFC 9110 5.5 says a parser must drop, and the SDK then refuses `Mcp-Name:  tool ` (http-header-validation).
    """
    return build_conformance_server().streamable_http_app(event_store=MemoryEventStore(), retry_interval=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--stdio", action="store_true", help="speak MCP on stdin and stdout")
    parser.add_argument("--port", type=int, default=3001, help="serve Streamable HTTP on 127.0.0.1:PORT/mcp")
    args = parser.parse_args(argv)
    if args.stdio:
        anyio.run(build_conformance_server().run_stdio_async)
    else:
        uvicorn.run(conformance_http_app(), host="127.0.0.1", port=args.port, http="h11", log_level="warning")


if __name__ == "__main__":
    main()

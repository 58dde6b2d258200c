"""What an operator's Prometheus and trace collector see: a real signoff, a real upstream, a real MCP client.

Metrics are read from `/metrics` as Prometheus parses them; traces through the OpenTelemetry SDK's in-memory
exporter, and on the upstream's side from the bytes it was sent.
"""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import httpx2
import pytest
from mcp_types import RequestParamsMeta
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from integrations.app import create_app
from integrations.errors import ConfigError
from integrations.settings import load_settings
from tests.conftest import AGENT_TOKEN, READER, Running, connect, write_config
from tests.fakes.upstreams import EverythingState, everything_http_app, loopback_socket, serve_http

pytestmark = pytest.mark.anyio

POLICY = {
    "version": "1",
    "default": "allow",
    "tools": {
        "drop_table": {"action": "deny", "reason": "Never drop tables"},
        "delete_record": {"action": "require_approval", "approval": {"approvers": ["alice"], "timeout": "10m"}},
    },
}
AGENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
AGENT_SPAN = "00f067aa0ba902b7"


def samples(page: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample on a /metrics page, as Prometheus reads it: (name, labels) to value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def value(page: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)


class Recorder:
    """An ASGI wrapper that keeps the JSON bodies an upstream was sent, to read what signoff forwarded."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.bodies: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            event = await receive()
            chunks.append(event.get("body", b""))
            more = event.get("more_body", False)
        body = b"".join(chunks)
        self.bodies.append(json.loads(body))
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@asynccontextmanager
async def traced(tmp_path: Path, upstream: str, exporter: InMemorySpanExporter | None) -> AsyncIterator[Running]:
    servers = [
        {"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY},
        {
            "name": "down",
            "url": f"http://127.0.0.1:{_closed_port()}/mcp",
            "policy": {"version": "1", "default": "allow"},
        },
    ]
    config = write_config(tmp_path, servers, approvers=True, gateway={"approval_hold": "20s"})
    settings = load_settings(config, environ={"ALPHA_TOKEN": AGENT_TOKEN})
    app = create_app(settings, span_exporter=exporter)
    async with serve_http(app) as url:
        yield Running(url=url, app=app)


def _closed_port() -> int:
    with loopback_socket() as sock:  # bound, never listening, then closed: nothing answers there
        port: int = sock.getsockname()[1]
    return port


async def scrape(running: Running) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text, samples(response.text)


async def approve_when_pending(running: Running, tool: str) -> str:
    async with httpx2.AsyncClient(base_url=running.url, timeout=10) as http:
        while True:  # bounded by the caller's fail_after
            listing = (await http.get(f"/api/approvals?status=pending&tool={tool}", headers=READER)).json()
            if listing["approvals"]:
                request_id = str(listing["approvals"][0]["id"])
                break
            await anyio.sleep(0.02)
        _, page = await scrape(running)
        assert value(page, "signoff_approvals_pending") == 1  # what a "requests waiting" panel shows
        approved = await http.post(
            f"/api/approvals/{request_id}/approve", headers={"Authorization": "Bearer alice-approver-token"}, json={}
        )
        assert approved.status_code == 200
    return request_id


async def test_metrics_count_and_time_calls_upstreams_and_approvals(tmp_path: Path) -> None:
    async with (
        serve_http(everything_http_app(EverythingState())) as upstream,
        traced(tmp_path, upstream, None) as running,
    ):
        async with running.client("ev") as client:
            await client.list_tools()  # the upstream lists its tools: their names become labels
            for _ in range(3):
                assert not (await client.call_tool("echo", {"text": "hi"})).is_error
            assert (await client.call_tool("drop_table", {"name": "users"})).is_error
            for n in range(40):  # names an agent made up are counted, but never become series of their own
                await client.call_tool(f"made_up_{n}", {})
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:

                    async def held() -> None:
                        assert not (await client.call_tool("delete_record", {"record_id": "r-1"})).is_error

                    tg.start_soon(held)
                    await approve_when_pending(running, "delete_record")
        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {}}}
        headers = {"Authorization": f"Bearer {AGENT_TOKEN}", "Accept": "application/json, text/event-stream"}
        async with httpx2.AsyncClient(timeout=10) as http:  # nothing answers there, not even initialize
            refused = (await http.post(running.mcp_url("down"), json=call, headers=headers)).json()
        assert refused["result"]["isError"] is True
        text, page = await scrape(running)

    assert value(page, "signoff_tool_calls_total", server="ev", decision="allowed") == 3 + 40
    assert value(page, "signoff_tool_calls_total", server="ev", decision="denied") == 1
    assert value(page, "signoff_tool_calls_total", server="ev", decision="approval_required") == 1
    assert value(page, "signoff_call_duration_seconds_count", server="ev", tool="echo", decision="allowed") == 3
    assert value(page, "signoff_call_duration_seconds_count", server="ev", tool="other", decision="allowed") == 40
    assert 'tool="made_up_' not in text
    assert value(page, "signoff_call_duration_seconds_count", server="ev", tool="drop_table", decision="denied") == 1
    # the three echoes and the approved delete_record ran upstream; the made-up names got the upstream's own error
    assert value(page, "signoff_upstream_duration_seconds_count", server="ev", outcome="ok") == 4
    assert value(page, "signoff_upstream_duration_seconds_count", server="ev", outcome="tool_error") == 40
    assert value(page, "signoff_upstream_errors_total", server="down", outcome="upstream_unavailable") == 1
    assert value(page, "signoff_upstream_errors_total", server="ev", outcome="tool_error") == 0
    assert value(page, "signoff_approvals_requested_total", server="ev", tool="delete_record") == 1
    assert value(page, "signoff_approvals_decided_total", server="ev", tool="delete_record", decision="approved") == 1
    assert value(page, "signoff_approval_decision_seconds_count", server="ev", decision="approved") == 1
    assert value(page, "signoff_approvals_pending") == 0
    assert value(page, "signoff_store_up", store="database") == 1
    assert value(page, "signoff_store_up", store="rate_limits") == 1
    assert value(page, "signoff_limit_refusals_total", reason="exhausted") == 0
    assert "signoff_audit_queue" in text and "signoff_background_parts_down 0.0" in text


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


async def test_a_traced_call_joins_the_agents_trace_and_passes_it_upstream(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    recorder = Recorder(everything_http_app(EverythingState()))
    async with serve_http(recorder) as upstream, traced(tmp_path, upstream, exporter) as running:
        meta = cast(RequestParamsMeta, {"traceparent": f"00-{AGENT_TRACE}-{AGENT_SPAN}-01"})
        async with running.client("ev") as client:
            assert not (await client.call_tool("echo", {"text": "traced"}, meta=meta)).is_error
            assert (await client.call_tool("drop_table", {"name": "users"}, meta=meta)).is_error
            with anyio.fail_after(20):
                async with anyio.create_task_group() as tg:

                    async def held() -> None:
                        assert not (await client.call_tool("delete_record", {"record_id": "r-2"}, meta=meta)).is_error

                    tg.start_soon(held)
                    await approve_when_pending(running, "delete_record")
    spans = exporter.get_finished_spans()

    echo = by_name(spans, "tools/call echo")
    server = next(s for s in echo if s.kind is SpanKind.SERVER)
    outgoing = next(s for s in echo if s.kind is SpanKind.CLIENT)
    assert f"{server.context.trace_id:032x}" == AGENT_TRACE  # a child of the agent's span
    assert server.parent is not None and f"{server.parent.span_id:016x}" == AGENT_SPAN
    assert server.attributes is not None and server.attributes["signoff.decision"] == "allowed"
    assert outgoing.parent is not None and outgoing.parent.span_id == server.context.span_id
    policy = [s for s in by_name(spans, "policy") if s.parent and s.parent.span_id == server.context.span_id]
    assert policy and policy[0].attributes is not None and policy[0].attributes["signoff.decision"] == "Allow"
    # the upstream was sent signoff's client span as the parent, in the same trace
    sent = next(b for b in recorder.bodies if b.get("params", {}).get("arguments") == {"text": "traced"})
    assert sent["params"]["_meta"]["traceparent"] == f"00-{AGENT_TRACE}-{outgoing.context.span_id:016x}-01"

    denied = next(s for s in by_name(spans, "tools/call drop_table") if s.kind is SpanKind.SERVER)
    assert denied.attributes is not None and denied.attributes["signoff.decision"] == "denied"
    assert not [s for s in by_name(spans, "tools/call drop_table") if s.kind is SpanKind.CLIENT]  # never sent

    held_spans = by_name(spans, "tools/call delete_record")
    root = next(s for s in held_spans if s.kind is SpanKind.SERVER)
    upstream_call = next(s for s in held_spans if s.kind is SpanKind.CLIENT)
    wait = next(s for s in by_name(spans, "approval") if s.parent and s.parent.span_id == root.context.span_id)
    assert root.attributes is not None and root.attributes["signoff.decision"] == "approval_required"
    assert upstream_call.parent is not None and upstream_call.parent.span_id == root.context.span_id
    assert wait.start_time is not None and upstream_call.start_time is not None
    assert wait.start_time <= upstream_call.start_time  # the approval came first, then the call ran
    assert root.end_time is not None and upstream_call.end_time is not None and root.end_time >= upstream_call.end_time


async def test_untraced_calls_go_upstream_byte_for_byte(tmp_path: Path) -> None:
    recorder = Recorder(everything_http_app(EverythingState()))
    async with serve_http(recorder) as upstream, traced(tmp_path, upstream, None) as running:
        meta = cast(RequestParamsMeta, {"traceparent": f"00-{AGENT_TRACE}-{AGENT_SPAN}-01"})
        async with connect(running.mcp_url("ev")) as client:
            assert not (await client.call_tool("echo", {"text": "as sent"}, meta=meta)).is_error
    sent = next(b for b in recorder.bodies if b.get("params", {}).get("arguments") == {"text": "as sent"})
    assert sent["params"]["_meta"]["traceparent"] == f"00-{AGENT_TRACE}-{AGENT_SPAN}-01"


@pytest.mark.parametrize(
    "carried",
    [
        {"traceparent": "00-zz-yy-01"},
        {"traceparent": 17},
        {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},  # all zeros: invalid by the W3C spec
        {"traceparent": f"00-{AGENT_TRACE}-{AGENT_SPAN}-01\x00"},
        {"tracestate": "a=b"},
    ],
)
async def test_a_hostile_trace_context_starts_a_new_trace_and_the_call_runs(tmp_path: Path, carried: Any) -> None:
    exporter = InMemorySpanExporter()
    async with serve_http(everything_http_app(EverythingState())) as upstream:
        async with traced(tmp_path, upstream, exporter) as running, running.client("ev") as client:
            result = await client.call_tool("echo", {"text": "x"}, meta=cast(RequestParamsMeta, carried))
    assert not result.is_error
    server = next(s for s in by_name(exporter.get_finished_spans(), "tools/call echo") if s.kind is SpanKind.SERVER)
    assert server.parent is None and f"{server.context.trace_id:032x}" != AGENT_TRACE


async def test_telemetry_otlp_endpoint_sends_the_spans_to_a_collector_over_http(tmp_path: Path) -> None:
    received: list[ExportTraceServiceRequest] = []

    async def collector(scope: Scope, receive: Receive, send: Send) -> None:  # an OTLP/HTTP receiver
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            event = await receive()
            body, more = body + event.get("body", b""), event.get("more_body", False)
        if scope["path"] == "/v1/traces":
            received.append(ExportTraceServiceRequest.FromString(body))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-protobuf")]}
        )
        await send({"type": "http.response.body", "body": b""})

    async with serve_http(collector) as otlp, serve_http(everything_http_app(EverythingState())) as upstream:
        servers = [{"name": "ev", "url": f"{upstream}/mcp", "policy": POLICY}]
        extra = f'\n[telemetry]\notlp_endpoint = "{otlp}"\nservice_name = "signoff-edge"\n'
        config = write_config(tmp_path, servers, approvers=True, extra=extra)
        app = create_app(load_settings(config, environ={"ALPHA_TOKEN": AGENT_TOKEN}))
        async with serve_http(app) as url, connect(f"{url}/mcp/ev") as client:
            assert not (await client.call_tool("echo", {"text": "exported"})).is_error
        # signoff has stopped: its last spans were sent as it did

    spans = [s for r in received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    services = {a.value.string_value for r in received for rs in r.resource_spans for a in rs.resource.attributes}
    assert "tools/call echo" in {s.name for s in spans}
    assert "signoff-edge" in services


def test_a_telemetry_endpoint_that_is_no_url_is_refused_at_startup(tmp_path: Path) -> None:
    config = write_config(tmp_path, [], extra='\n[telemetry]\notlp_endpoint = "collector:4318"\n')
    with pytest.raises(ConfigError, match="otlp_endpoint must be an http:// or https:// URL, not 'collector:4318'"):
        load_settings(config, environ={"ALPHA_TOKEN": AGENT_TOKEN})

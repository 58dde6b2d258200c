"""What the gateway tells the operator's monitoring: metrics always, OpenTelemetry traces when configured.

A traced `tools/call` is one server span, `tools/call {tool}`, with children: `policy` (the decision), `approval`
(the wait for a person, for a call held open), and `tools/call {tool}` as a client span to the upstream. The trace
is taken from the request's `params._meta` (`traceparent`, `tracestate`, `baggage`: W3C Trace Context, as the
2026-07-28 revision of MCP reserves them), so signoff's spans join the agent's trace; and the upstream call carries
its own span's `traceparent` in `_meta`, so the upstream's spans join it too. Without `[telemetry] otlp_endpoint`
nothing is traced and a call's bytes go upstream unchanged.
"""

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, get_current_span, set_span_in_context

from integrations.metrics import Metrics

__all__ = ["CARRIED", "Telemetry", "carrying", "ended", "tracer_provider"]

logger = logging.getLogger(__name__)

CARRIED = ("traceparent", "tracestate", "baggage")  # the `_meta` keys SEP-414 reserves for trace context
FAILED = frozenset({"upstream_failure", "upstream_unavailable", "error"})


def tracer_provider(
    service_name: str, otlp_endpoint: str | None, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """A provider exporting to `exporter` as each span ends (tests), else batched over OTLP/HTTP to
    `otlp_endpoint`; None when neither is given: nothing is traced."""
    if exporter is None and otlp_endpoint is None:
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = f"{str(otlp_endpoint).rstrip('/')}/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5)))
    return provider


@dataclass(slots=True)
class Telemetry:
    """The metrics every part reports to, and the tracer (None: tracing is off)."""

    metrics: Metrics
    tracer: Tracer | None = None

    def call_span(self, meta: Any, server: str, agent: str, session: str | None) -> Span | None:
        """The server span of one `tools/call`, a child of the trace in `meta` (its `params._meta`) if any."""
        if self.tracer is None:
            return None
        attributes = {"mcp.method.name": "tools/call", "signoff.server": server, "signoff.agent": agent}
        if session is not None:
            attributes["mcp.session.id"] = session
        return self.tracer.start_span("tools/call", _parent(meta), SpanKind.SERVER, attributes)

    def child(self, parent: Span | None, name: str, kind: SpanKind = SpanKind.INTERNAL) -> Span | None:
        if self.tracer is None or parent is None:
            return None
        return self.tracer.start_span(name, set_span_in_context(parent), kind)

    def upstream_started(self, parent: Span | None, server: str, tool: str) -> Span | None:
        span = self.child(parent, f"tools/call {tool}", SpanKind.CLIENT)
        if span is not None:
            span.set_attributes({"mcp.method.name": "tools/call", "gen_ai.tool.name": tool, "signoff.server": server})
        return span

    def upstream_done(self, span: Span | None, server: str, outcome: str, seconds: float) -> None:
        self.metrics.upstream(server, outcome, seconds)
        if span is not None:
            span.set_attribute("signoff.outcome", outcome)
            if outcome in FAILED:
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.end()


def _parent(meta: Any) -> Context | None:
    """The trace context a request's `_meta` carries; None (a new trace) when it carries none that is valid."""
    if not isinstance(meta, Mapping):
        return None
    carrier = {key: value for key in CARRIED if isinstance(value := meta.get(key), str)}
    if "traceparent" not in carrier:
        return None
    try:
        context = propagate.extract(carrier)
    except Exception:  # a hostile header value must not fail the call: it only loses its parent
        logger.debug("Unreadable trace context in _meta", exc_info=True)
        return None
    return context if _valid(context) else None


def _valid(context: Context) -> bool:
    return get_current_span(context).get_span_context().is_valid


def carrying(message: dict[str, Any], span: Span) -> tuple[dict[str, Any], bytes]:
    """`message` (a `tools/call`) with `span`'s trace context in `params._meta` in place of the agent's, and its
    bytes: what the upstream is sent, so that its spans are children of signoff's call to it."""
    params = message.get("params")
    params = params if isinstance(params, dict) else {}
    found = params.get("_meta")
    meta = {k: v for k, v in found.items() if k not in CARRIED} if isinstance(found, dict) else {}
    propagate.inject(meta, context=set_span_in_context(span))
    carried = {**message, "params": {**params, "_meta": meta}}
    return carried, json.dumps(carried, separators=(",", ":")).encode()  # ASCII: lone surrogates stay escaped


def ended(span: Span | None, **attributes: str) -> None:
    """End `span` (if tracing) with `attributes` set."""
    if span is not None:
        span.set_attributes(attributes)
        span.end()

"""Prometheus metrics: what signoff counts and times, kept by `prometheus_client`, shown at `GET /metrics`.

Every app has a registry of its own, so that two apps in one process (as in tests) never share counts. With
`signoff serve --workers N` each worker counts in prometheus_client's multiprocess files (the directory that
`settings.tell_workers` names in $PROMETHEUS_MULTIPROC_DIR before the workers start), and whichever worker
answers a scrape adds up every worker's: counters and histograms are the whole server's. The gauges read at
scrape time (`Scraped`: the audit queue, the stores' state) are the answering worker's own, except the pending
approvals, which are counted in the database.

Labels never take a value an agent chose freely: a tool is labelled with its name only once its upstream has
listed it, else `other`, so that a client calling made-up names cannot grow the series without bound.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics", "Scraped"]

# `_created` samples would double the page, and no alert reads them.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
OTHER_TOOL = "other"

# From a policy's refusal (well under a millisecond) to a held call's answer (seconds to minutes).
CALL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# The time a person takes to decide: seconds to hours.
DECISION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
DECIDED = frozenset({"approved", "rejected", "expired", "cancelled"})


class Metrics:
    """The instruments the gateway, the limits and the approval events report to."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        """`multiprocess_dir`: where every worker's counts are (`settings.metrics_directory()`), None: one process."""
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The children of the per-call series by label values (bounded: a tool is labelled only once listed).
        self._calls: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._upstreams: dict[tuple[str, str], Any] = {}
        self.tool_calls = Counter(
            "signoff_tool_calls", "Tool calls by server and decision.", ["server", "decision"], registry=r
        )
        self.call_seconds = Histogram(
            "signoff_call_duration_seconds",
            "From a tools/call's arrival to its decision's audit row: its answer for a call that ran, the refusal, "
            "or the hold for one that needs approval.",
            ["server", "tool", "decision"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "signoff_upstream_duration_seconds",
            "A forwarded tools/call's time upstream, by server and outcome.",
            ["server", "outcome"],
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "signoff_upstream_errors",
            "Forwarded tools/calls whose upstream failed (upstream_failure), could not be reached "
            "(upstream_unavailable) or lost its agent (error).",
            ["server", "outcome"],
            registry=r,
        )
        self.approvals_requested = Counter(
            "signoff_approvals_requested", "Approval requests opened.", ["server", "tool"], registry=r
        )
        self.approvals_decided = Counter(
            "signoff_approvals_decided",
            "Approval requests ended: approved, rejected, expired or cancelled.",
            ["server", "tool", "decision"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "signoff_approval_decision_seconds",
            "From an approval request to its end (a person's decision, or its deadline).",
            ["server", "decision"],
            buckets=DECISION_BUCKETS,
            registry=r,
        )
        self.limit_refusals = Counter(
            "signoff_limit_refusals", "Limited calls refused: limit exhausted, or store down.", ["reason"], registry=r
        )
        self.limits_uncounted = Counter(
            "signoff_limits_uncounted", "Limited calls let through uncounted while the store was down.", registry=r
        )
        for reason in ("exhausted", "store_unreachable"):  # present at 0, so that rate() works from the start
            self.limit_refusals.labels(reason)

    # -- what the parts report --------------------------------------------------------------------------------

    def call(self, server: str, tool: str, decision: str, seconds: float) -> None:
        key = (server, tool, decision)
        children = self._calls.get(key)
        if children is None:  # `labels` takes a lock and checks its values: once per label set, not per call
            children = self._calls[key] = (
                self.tool_calls.labels(server, decision),
                self.call_seconds.labels(server, tool, decision),
            )
        children[0].inc()
        children[1].observe(seconds)

    def refused(self, server: str, decision: str) -> None:
        """A request refused before any tool was named (a server the agent may not reach)."""
        self.tool_calls.labels(server, decision).inc()

    def upstream(self, server: str, outcome: str, seconds: float) -> None:
        child = self._upstreams.get((server, outcome))
        if child is None:
            child = self._upstreams[server, outcome] = self.upstream_seconds.labels(server, outcome)
        child.observe(seconds)
        if outcome not in ("ok", "tool_error"):
            self.upstream_errors.labels(server, outcome).inc()

    def publish(self, event: str, request: dict[str, Any]) -> None:
        """A `Notifier`: count approval requests as the engine announces them."""
        server, tool = str(request.get("server", "")), str(request.get("tool", ""))
        if event == "approval.requested":
            self.approvals_requested.labels(server, tool).inc()
            return
        decision = event.removeprefix("approval.")
        if decision not in DECIDED:
            return
        self.approvals_decided.labels(server, tool, decision).inc()
        try:
            began = datetime.fromisoformat(request["requested_at"])
            ended = datetime.fromisoformat(request["responded_at"] or request["deadline"])
        except (KeyError, TypeError, ValueError):
            return
        self.decision_seconds.labels(server, decision).observe(max(0.0, (ended - began).total_seconds()))

    # -- the page -----------------------------------------------------------------------------------------------

    def page(self, scraped: "Scraped") -> bytes:
        """The text exposition of every instrument (every worker's, with workers) and of `scraped`."""
        if self.multiprocess_dir is None:
            registry = self.registry
        else:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        registry.register(scraped)
        try:
            return generate_latest(registry)
        finally:
            registry.unregister(scraped)


@dataclass(eq=False)  # registered by identity: a registry keeps its collectors in a dict
class Scraped(Collector):
    """Values read when a scrape comes: gauges of what is now, and counters the parts keep themselves."""

    audit_queue: int
    pending: int
    stores_up: dict[str, bool] = field(default_factory=dict)
    audit_quarantined: int = 0
    parts_down: int = 0

    def collect(self) -> Iterator[Metric]:
        yield _gauge("signoff_audit_queue", "Audit records waiting to be written.", self.audit_queue)
        yield _gauge("signoff_approvals_pending", "Approval requests waiting for a decision.", self.pending)
        up = GaugeMetricFamily(
            "signoff_store_up", "Whether each store answered its last use (1) or failed (0).", labels=["store"]
        )
        for store, ok in sorted(self.stores_up.items()):
            up.add_metric([store], 1 if ok else 0)
        yield up
        yield CounterMetricFamily(
            "signoff_audit_quarantined",
            "Audit records the database refused as they were, stored in a reduced form instead.",
            value=self.audit_quarantined,
        )
        yield _gauge(
            "signoff_background_parts_down",
            "Background parts (writers, polls) down now: /healthz names them.",
            self.parts_down,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)

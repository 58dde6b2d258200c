"""Small builders shared by the policy tests (pure values, no fixtures)."""

import json
from pathlib import Path
from typing import Any

from policies import Decision, Policy, RateLimiter, ToolCall, evaluate, load_policy

CATALOG = Path(__file__).resolve().parents[2] / "policies" / "catalog"
T0 = 1_700_000_040.0  # a multiple of 60, so minute windows start exactly here


def policy(doc: dict[str, Any]) -> Policy:
    return load_policy(json.dumps(doc))


def call(tool: str, identity: str = "agent-1", server: str = "srv", **arguments: Any) -> ToolCall:
    return ToolCall(server=server, tool=tool, arguments=arguments, identity=identity)


def decide(p: Policy, tool: str, now: float = T0, limiter: RateLimiter | None = None, **arguments: Any) -> Decision:
    return evaluate(p, call(tool, **arguments), RateLimiter() if limiter is None else limiter, now)


def catalog(name: str) -> Policy:
    path = CATALOG / f"{name}.json"
    return load_policy(path.read_text(), source=str(path))

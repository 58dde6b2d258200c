"""Who may reach what: an agent's identity (name and groups), the servers it may reach, and its own policies.

Plain values built from the config at start (`integrations.preflight.agent_rights`); the gateway reads them on
every request and never looks anything up itself. Whatever proves who an agent is (a static token, an OAuth
access token) ends in the same `Caller` and looks its `Rights` up by the agent's name.
"""

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from approvals.audit import AuditRecord
from approvals.models import AuditKind
from integrations.gateway.wire import Message, rpc_error
from policies import Caller, Policy

__all__ = ["Rights", "own_policy", "unreachable"]

INVALID_REQUEST = -32600


@dataclass(frozen=True, slots=True)
class Rights:
    """What one agent may do: who it is (`caller`), and the servers it may reach (None: all of them)."""

    caller: Caller
    servers: frozenset[str] | None = None

    def may_reach(self, server: str) -> bool:
        return self.servers is None or server in self.servers

    def reachable(self, served: Iterable[str]) -> list[str]:
        """The servers of `served` this agent may reach, sorted."""
        return sorted(name for name in served if self.may_reach(name))


def own_policy(policy: Policy, agent: str) -> Policy:
    """`policy` as `agent`'s own policy for a server: the same rules, its limits counted in a budget of its own.

    An agent's own policy replaces the server's for that agent, so a budget it shares by name (a `global` counter
    `all`, say) must not be drawn from the server policy's, which every other agent spends.
    """
    return dataclasses.replace(policy, counters=f"agent:{agent}")


def unreachable(rights: Rights, server: str, method: str, served: Iterable[str]) -> tuple[Message, AuditRecord]:
    """The JSON-RPC error (sent with 403) and the audit record for an agent asking for a server outside its
    `servers`: both name the servers it may reach, so the agent (or the person reading the log) can tell."""
    agent, reachable = rights.caller.name, rights.reachable(served)
    why = f"agent {agent!r} may not reach server {server!r}; it may reach: {', '.join(reachable) or 'none'}"
    error = rpc_error(None, INVALID_REQUEST, f"Forbidden: {why}")
    error["error"]["data"] = {"agent": agent, "server": server, "reachable": reachable}
    record = AuditRecord(
        kind=AuditKind.SERVER_REFUSED, server=server, identity=agent, outcome="refused", detail=f"{method}: {why}"
    )
    return error, record

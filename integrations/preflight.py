"""What `create_app` checks before it serves anything: the config's tokens, every server's policy, and every policy
an agent has of its own.

Every fault is listed at once, each at its key path (and a policy fault at its file and JSON path), so one start
shows everything to fix. It reads the policy files and nothing else; a config it refuses never opens a socket.
"""

from dataclasses import dataclass
from pathlib import Path

from integrations.errors import ConfigError
from integrations.gateway.rights import Rights, own_policy
from integrations.settings import ServerSettings, Settings, token_faults
from policies import Caller, Policy, PolicyInvalid, format_fault, load_policy

__all__ = ["PolicySet", "agent_rights", "load_policies", "load_policy_set", "policy_faults"]


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Every policy the config names: each server's, and each agent's own by (server, agent)."""

    servers: dict[str, Policy]
    agents: dict[tuple[str, str], Policy]


def _load(path: Path, where: str, approvers: frozenset[str]) -> tuple[Policy | None, list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [f"{where}: cannot read {path}: {exc.strerror}"]
    try:
        return load_policy(text, source=str(path), approvers=approvers), []
    except PolicyInvalid as exc:
        errors = [f for f in exc.faults if f.severity == "error"]
        return None, [f"{where} is invalid:", *("  " + format_fault(f, str(path)) for f in errors)]


def policy_faults(server: ServerSettings, index: int, approvers: frozenset[str]) -> tuple[Policy | None, list[str]]:
    """Load the policy a server names, checking the approvers it names against `approvers`; the policy or faults."""
    return _load(Path(server.policy), f"servers[{index}].policy ({server.name})", approvers)


def load_policy_set(settings: Settings) -> PolicySet:
    """Every server's policy by server name, and every agent's own (its limits in a budget of their own), once the
    tokens and all the policies are sound.

    Raises:
        ConfigError: listing every token fault and every fault in every policy, an approver that no
            `[[approvers]]` entry provides among them.
    """
    lines = [f"  {fault}" for fault in token_faults(settings)]
    servers: dict[str, Policy] = {}
    agents: dict[tuple[str, str], Policy] = {}
    for index, server in enumerate(settings.servers):
        policy, faults = policy_faults(server, index, settings.approver_names)
        if policy is not None:
            servers[server.name] = policy
        lines += [f"  {fault}" for fault in faults]
    for index, agent in enumerate(settings.agents):
        for server_name, path in agent.policies.items():
            where = f"agents[{index}].policies.{server_name} ({agent.name})"
            policy, faults = _load(Path(path), where, settings.approver_names)
            if policy is not None:
                agents[(server_name, agent.name)] = own_policy(policy, agent.name)
            lines += [f"  {fault}" for fault in faults]
    if lines:
        raise ConfigError(f"{settings.source}: the configuration is refused:\n" + "\n".join(lines))
    return PolicySet(servers, agents)


def load_policies(settings: Settings) -> dict[str, Policy]:
    """Every server's policy by server name (see `load_policy_set`, which agents' own policies need)."""
    return load_policy_set(settings).servers


def agent_rights(settings: Settings) -> dict[str, Rights]:
    """Each configured agent's rights by name: who it is (name, groups) and the servers it may reach."""
    return {
        a.name: Rights(Caller(a.name, a.groups), None if a.servers is None else frozenset(a.servers))
        for a in settings.agents
    }

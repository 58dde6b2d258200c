"""What `create_app` checks before it serves anything: the config's tokens and every server's policy.

Every fault is listed at once, each at its key path (and a policy fault at its file and JSON path), so one start
shows everything to fix. It reads the policy files and nothing else; a config it refuses never opens a socket.
"""

from pathlib import Path

from integrations.errors import ConfigError
from integrations.settings import ServerSettings, Settings, token_faults
from policies import Policy, PolicyInvalid, format_fault, load_policy

__all__ = ["load_policies", "policy_faults"]


def policy_faults(server: ServerSettings, index: int, approvers: frozenset[str]) -> tuple[Policy | None, list[str]]:
    """Load the policy a server names, checking the approvers it names against `approvers`; the policy or faults."""
    path = Path(server.policy)
    where = f"servers[{index}].policy ({server.name})"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [f"{where}: cannot read {path}: {exc.strerror}"]
    try:
        return load_policy(text, source=str(path), approvers=approvers), []
    except PolicyInvalid as exc:
        errors = [f for f in exc.faults if f.severity == "error"]
        return None, [f"{where} is invalid:", *("  " + format_fault(f, str(path)) for f in errors)]


def load_policies(settings: Settings) -> dict[str, Policy]:
    """Every server's policy by server name, once the tokens and all the policies are sound.

    Raises:
        ConfigError: listing every token fault and every fault in every server's policy, an approver that no
            `[[approvers]]` entry provides among them.
    """
    lines = [f"  {fault}" for fault in token_faults(settings)]
    policies: dict[str, Policy] = {}
    for index, server in enumerate(settings.servers):
        policy, faults = policy_faults(server, index, settings.approver_names)
        if policy is not None:
            policies[server.name] = policy
        lines += [f"  {fault}" for fault in faults]
    if lines:
        raise ConfigError(f"{settings.source}: the configuration is refused:\n" + "\n".join(lines))
    return policies

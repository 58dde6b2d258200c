"""What `signoff serve` says at start for a real config: where each server is served, the web page, who approves,
and how Slack is reached. Never a token, header or environment value: a command shows only its program."""

from pathlib import Path
from urllib.parse import urlsplit

from integrations.settings import ServerSettings, Settings

__all__ = ["startup_lines"]


def _upstream(server: ServerSettings) -> str:
    if server.command is not None:
        return f"stdio: {Path(server.command[0]).name}"
    parts = urlsplit(server.url or "")
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"  # no userinfo, query or fragment: they may carry secrets


def _slack_mode(settings: Settings) -> str:
    slack = settings.slack
    if slack is None:
        return "off (no [slack] section)"
    if slack.app_token is not None:
        return "Socket Mode (signoff connects out to Slack; no public URL needed)"
    if slack.signing_secret is not None:
        return f"HTTP mode: Slack posts clicks to {settings.gateway.base_url}/slack/events"
    return "not connected: neither signing_secret (HTTP mode) nor app_token (Socket Mode) is set"


def startup_lines(settings: Settings) -> list[str]:
    """The summary, one line each, in the order an on-call engineer checks them."""
    base = settings.gateway.base_url
    width = max((len(s.name) for s in settings.servers), default=0)
    lines = [f"signoff serves {settings.source}:", "  MCP endpoints:"]
    for server in settings.servers:
        lines.append(
            f"    {server.name:<{width}} : {base}/mcp/{server.name}   ({_upstream(server)}; policy {server.policy})"
        )
    lines.append(f"  approvals page : {base}/approvals")
    if settings.approvers:
        names = [a.name + (" (slack)" if a.slack_user else "") for a in settings.approvers]
        lines.append(f"  approvers      : {', '.join(names)}")
    else:
        lines.append("  approvers      : none configured: no one can approve a call that needs approval")
    lines.append(f"  slack          : {_slack_mode(settings)}")
    return lines

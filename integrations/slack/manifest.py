"""`signoff slack manifest`: the Slack app manifest (integrations/slack/manifest.yml) ready to paste, with the
request URL filled in for HTTP mode, or Socket Mode turned on with no request URL at all.

The file stays the one source: this only rewrites its two mode lines and its header comment.
"""

from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["MANIFEST", "manifest_text"]

MANIFEST = Path(__file__).with_name("manifest.yml")
_EXAMPLE_URL = "https://signoff.example.com/slack/events"


def manifest_text(public_url: str | None, *, socket_mode: bool = False) -> str:
    """The manifest for a signoff at `public_url` (HTTP mode) or, with `socket_mode`, for Socket Mode.

    Raises:
        ValueError: HTTP mode without an http(s) `public_url`.
    """
    body = [line for line in MANIFEST.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    if socket_mode:
        header = [
            "# signoff's Slack app, Socket Mode: api.slack.com/apps > Create New App > From an app manifest.",
            "# Then create an App-Level Token with the connections:write scope (Basic Information > App-Level",
            "# Tokens) for [slack] app_token; signoff connects out to Slack and needs no public URL.",
        ]
        body = [line for line in body if "request_url:" not in line]
        body = [line.replace("socket_mode_enabled: false", "socket_mode_enabled: true") for line in body]
    else:
        parts = urlsplit(public_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{public_url!r} is not a URL: give the https:// address Slack reaches signoff at")
        events = f"{public_url.rstrip('/') if public_url else ''}/slack/events"
        header = [
            "# signoff's Slack app, HTTP mode: api.slack.com/apps > Create New App > From an app manifest.",
            f"# Slack posts clicks to {events}; set [slack] signing_secret from Basic Information.",
        ]
        body = [line.replace(_EXAMPLE_URL, events) for line in body]
    return "\n".join([*header, *body]) + "\n"

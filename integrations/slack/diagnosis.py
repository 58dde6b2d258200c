"""Slack's error codes in plain words, for logs, `/healthz` and `signoff slack test`.

Slack answers a refused Web API call with `{"ok": false, "error": "<code>"}` (and, for `missing_scope`, the
scope it `needed`); these sentences say what to change. See https://docs.slack.dev/reference/methods/chat.postMessage#errors.
"""

__all__ = ["PERMANENT", "explain"]

# Errors that a retry in a second will not fix: someone has to change the app, the token or the channel.
PERMANENT = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "missing_scope",
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "restricted_action",
        "invalid_blocks",
        "msg_too_long",
        "no_text",
    }
)


def explain(error: str, *, channel: str | None = None, needed: str | None = None) -> str:
    """What `error` means and what to do about it, in one or two sentences."""
    where = f" {channel}" if channel else " the channel"
    match error:
        case "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive":
            return (
                f"Slack refused the bot token ({error}): check [slack] bot_token. It is the Bot User OAuth Token "
                "(xoxb-...) on the app's OAuth & Permissions page; reinstall the app if it was revoked."
            )
        case "missing_scope":
            scope = needed or "a scope"
            return (
                f"The Slack app lacks the {scope} scope: add it under OAuth & Permissions > Bot Token Scopes "
                "(integrations/slack/manifest.yml lists every scope signoff needs), then reinstall the app."
            )
        case "not_in_channel":
            return f"The bot is not a member of{where}: invite it there with /invite @signoff."
        case "channel_not_found":
            return (
                f"Slack knows no channel{where}, or it is private and the bot is not in it: check the channel "
                "name ([slack] channel or the rule's approval.channel), or invite the bot with /invite @signoff."
            )
        case "is_archived":
            return f"The channel{where} is archived: unarchive it or choose another."
        case "ratelimited":
            return "Slack is rate-limiting signoff; it waits as Slack asks (Retry-After) and tries again."
        case "invalid_blocks" | "msg_too_long" | "no_text":
            return f"Slack refused the message itself ({error}); this is a signoff bug, please report it."
        case _:
            return f"Slack answered {error}."

"""`signoff slack test`: check the [slack] settings against Slack and post a test message, saying what is wrong.

Synchronous and standalone (it does not need a running signoff): auth.test with the bot token, a test post
to the channel, apps.connections.open with the app token in Socket Mode. Each failure is explained in plain
words by `diagnosis.explain`. It prints no token.
"""

from typing import TextIO
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from integrations.settings import Settings, is_loopback
from integrations.slack.blocks import check_message
from integrations.slack.diagnosis import explain
from integrations.slack.integration import api_base_url, slack_approvers

__all__ = ["check_slack"]

OK, FAULTS, CONFIG = 0, 1, 2


def check_slack(settings: Settings, channel: str | None, out: TextIO) -> int:
    """Run the checks and write what they found to `out`; returns the exit code (0 when all is well)."""
    slack = settings.slack
    if slack is None:
        out.write(f"no [slack] section in {settings.source}: add one (README, 'Slack') to decide in Slack\n")
        return CONFIG
    if slack.bot_token is None:
        out.write("[slack] bot_token is not set: copy the Bot User OAuth Token (xoxb-...) from the app's OAuth page\n")
        return CONFIG
    base_url = api_base_url(slack)
    client = WebClient(token=slack.bot_token.get_secret_value(), base_url=base_url, timeout=15)
    try:
        auth = client.auth_test()
    except SlackApiError as exc:
        out.write(f"bot token: {explain(str(exc.response.get('error')))}\n")
        return FAULTS
    except OSError as exc:
        out.write(f"cannot reach Slack at {base_url}: {exc}\n")
        return FAULTS
    team, bot = str(auth.get("team")), str(auth.get("user"))
    out.write(f"ok: the bot token works: workspace {team}, bot @{bot}\n")
    faults = 0
    where = channel or slack.channel
    if where is None:
        out.write("no channel: set [slack] channel (or pass --channel) to post requests whose rule names none\n")
        faults += 1
    else:
        message = check_message(team, bot)
        try:
            client.chat_postMessage(channel=where, text=message.text, blocks=message.blocks)
            out.write(f"ok: posted a test message to {where}\n")
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            needed = exc.response.get("needed")
            out.write(f"cannot post to {where}: {explain(error, channel=where, needed=needed)}\n")
            faults += 1
    faults += _check_mode(settings, base_url, out)
    mapped = slack_approvers(settings.approvers)
    if mapped:
        names = ", ".join(sorted(a.name for a in mapped.values()))
        out.write(f"ok: {len(mapped)} approver(s) can decide from Slack: {names}\n")
    else:
        out.write("no [[approvers]] entry has a slack_user: every click in Slack will be refused\n")
        faults += 1
    unmapped = [a.name for a in settings.approvers if not a.slack_user]
    if unmapped and mapped:
        out.write(
            f"warning: {len(unmapped)} approver(s) have no slack_user, so they cannot decide from Slack (their"
            f" clicks are refused): {', '.join(unmapped)}. Add each one's member ID (Slack profile > ... > Copy"
            " member ID)\n"
        )
    _check_links(settings, out)
    return FAULTS if faults else OK


def _check_links(settings: Settings, out: TextIO) -> None:
    """Warn when the links in Slack messages point at this machine only: they open nowhere else (a phone)."""
    base = settings.gateway.base_url
    if is_loopback(urlsplit(base).hostname or ""):
        what = (
            "[gateway] public_url is"
            if settings.gateway.public_url
            else "[gateway] public_url is not set, so links are"
        )
        out.write(
            f"warning: {what} {base}, a loopback address: the Open button and links in Slack messages will not"
            " open on a phone or another machine. Set public_url to the address approvers reach signoff at\n"
        )


def _check_mode(settings: Settings, base_url: str, out: TextIO) -> int:
    slack = settings.slack
    if slack is None:
        return 0
    if slack.app_token is not None:
        try:
            WebClient(base_url=base_url, timeout=15).apps_connections_open(app_token=slack.app_token.get_secret_value())
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            out.write(
                f"Socket Mode: Slack refused the app token ({error}): use an App-Level Token (xapp-...) with the "
                "connections:write scope (Basic Information > App-Level Tokens), and turn Socket Mode on\n"
            )
            return 1
        except OSError as exc:
            out.write(f"Socket Mode: cannot reach Slack at {base_url}: {exc}\n")
            return 1
        out.write("ok: Socket Mode: the app token works; signoff connects out to Slack, no public URL needed\n")
        return 0
    if slack.signing_secret is not None:
        out.write(
            "HTTP mode: set the app's Interactivity Request URL to "
            f"{settings.gateway.base_url}/slack/events (Slack must reach it; or set app_token for Socket Mode)\n"
        )
        return 0
    out.write("neither signing_secret (HTTP mode) nor app_token (Socket Mode) is set: clicks cannot reach signoff\n")
    return 1

"""`signoff slack test` as a user runs it, against the loopback Slack Web API: what works, and what is wrong."""

from pathlib import Path

import anyio
import pytest

from integrations.cli import main
from tests.fakes.slack_api import FakeSlack
from tests.fakes.upstreams import serve_http

pytestmark = pytest.mark.anyio


def config(tmp_path: Path, api: str, *, token: str = FakeSlack.bot_token, extra: str = "") -> str:
    path = tmp_path / "signoff.toml"
    path.write_text(
        "[slack]\n"
        f'bot_token = "{token}"\n'
        'signing_secret = "slack-signing-secret-1"\n'
        'channel = "#approvals"\n'
        f'api_url = "{api}/api/"\n'
        f"{extra}\n"
        '[[approvers]]\nname = "alice"\nslack_user = "U0ALICE"\n'
    )
    return str(path)


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with anyio.fail_after(20):
        code = await anyio.to_thread.run_sync(main, list(argv))
    return code, capsys.readouterr().out


async def test_a_working_setup_posts_a_test_message_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slack = FakeSlack()
    async with serve_http(slack.app) as api:
        code, out = await run(capsys, "--config", config(tmp_path, api), "slack", "test")

    assert code == 0, out
    assert "ok: the bot token works: workspace Acme, bot @signoff" in out
    assert "ok: posted a test message to #approvals" in out
    assert "Interactivity Request URL" in out and "/slack/events" in out
    assert "1 approver(s) can decide from Slack: alice" in out
    [post] = slack.called("chat.postMessage")
    assert post.args["channel"] == "#approvals" and "signoff can post here" in post.args["text"]


async def test_a_wrong_token_a_bot_outside_the_channel_and_a_missing_scope_are_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slack = FakeSlack()
    async with serve_http(slack.app) as api:
        bad_token, bad_token_out = await run(
            capsys, "--config", config(tmp_path, api, token="xoxb-wrong"), "slack", "test"
        )
        good = config(tmp_path, api)
        slack.fail("chat.postMessage", error="not_in_channel")
        outside, outside_out = await run(capsys, "--config", good, "slack", "test")
        unknown, unknown_out = await run(capsys, "--config", good, "slack", "test", "--channel", "#nope")
        slack.missing_scopes.add("chat:write")
        scope, scope_out = await run(capsys, "--config", good, "slack", "test")

    assert bad_token == 1 and "Slack refused the bot token (invalid_auth)" in bad_token_out
    assert (
        outside == 1 and "The bot is not a member of #approvals: invite it there with /invite @signoff" in outside_out
    )
    assert unknown == 1 and "Slack knows no channel #nope" in unknown_out
    assert scope == 1 and "lacks the chat:write scope" in scope_out and "reinstall" in scope_out


async def test_socket_mode_checks_the_app_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slack = FakeSlack()
    async with serve_http(slack.app) as api:
        good, good_out = await run(
            capsys, "--config", config(tmp_path, api, extra='app_token = "xapp-test-token"'), "slack", "test"
        )
        bad, bad_out = await run(
            capsys, "--config", config(tmp_path, api, extra='app_token = "xapp-wrong"'), "slack", "test"
        )

    assert good == 0 and "ok: Socket Mode: the app token works" in good_out
    assert bad == 1 and "Slack refused the app token (invalid_auth)" in bad_out and "connections:write" in bad_out


async def test_without_a_slack_section_it_says_how_to_add_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "signoff.toml"
    path.write_text("[gateway]\nport = 8080\n")

    assert main(["--config", str(path), "slack", "test"]) == 2
    assert "no [slack] section" in capsys.readouterr().out


def test_the_manifest_is_ready_to_paste_in_http_mode_and_in_socket_mode(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml  # type: ignore[import-untyped]  # pre-commit's dependency: read the manifest as Slack does

    assert main(["slack", "manifest", "--public-url", "https://signoff.acme.dev/"]) == 0
    http = capsys.readouterr()
    assert main(["slack", "manifest", "--socket-mode"]) == 0
    socket = capsys.readouterr()
    assert main(["slack", "manifest", "--public-url", "http://127.0.0.1:8080"]) == 0
    loopback = capsys.readouterr()
    assert main(["slack", "manifest", "--public-url", "signoff.acme.dev"]) == 2
    bad = capsys.readouterr()

    http_settings = yaml.safe_load(http.out)["settings"]
    assert http_settings["interactivity"] == {
        "is_enabled": True,
        "request_url": "https://signoff.acme.dev/slack/events",
    }
    assert http_settings["socket_mode_enabled"] is False and http.err == ""
    socket_manifest = yaml.safe_load(socket.out)
    assert socket_manifest["settings"]["interactivity"] == {"is_enabled": True}
    assert socket_manifest["settings"]["socket_mode_enabled"] is True
    assert socket_manifest["oauth_config"]["scopes"]["bot"] == ["chat:write", "chat:write.public"]
    assert "connections:write" in socket.out and "request_url" not in socket.out
    assert "http://127.0.0.1:8080/slack/events" in loopback.out and "warning: Slack must reach" in loopback.err
    assert "is not a URL" in bad.err


async def test_it_warns_of_a_loopback_public_url_and_names_approvers_without_a_slack_user(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    slack = FakeSlack()
    others = '\n[[approvers]]\nname = "bob"\n\n[[approvers]]\nname = "carol"\n'
    loopback, public = (
        f'[gateway]\npublic_url = "{url}"\n{others}' for url in ("http://localhost:8080", "https://a.dev")
    )
    async with serve_http(slack.app) as api:
        code, out = await run(capsys, "--config", config(tmp_path, api, extra=loopback), "slack", "test")
        _, public_out = await run(capsys, "--config", config(tmp_path, api, extra=public), "slack", "test")

    assert code == 0, out
    assert (
        "warning: [gateway] public_url is http://localhost:8080, a loopback address: the Open button and links in"
        " Slack messages will not open on a phone or another machine" in out
    )
    assert "warning: 2 approver(s) have no slack_user, so they cannot decide from Slack" in out
    assert "cannot decide from Slack (their clicks are refused): bob, carol. Add each one's member ID" in out
    assert "loopback" not in public_out

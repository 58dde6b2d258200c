"""`signoff init`: a starter signoff.toml that `signoff serve` serves at once, its secrets in a .env beside it.

One agent, one approver, one server: the one given (`--server URL` or `--server "COMMAND ..."`, with a policy
`signoff policy suggest` writes from its tool list) or else the built-in demo. It never replaces a file.
"""

import argparse
import json
import os
import re
import secrets
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio

from integrations.errors import UpstreamUnavailable
from integrations.settings import DOTENV, ServerSettings

__all__ = ["add_init_command", "server_name"]

EXIT_OK, EXIT_CANNOT = 0, 2
_RUNNERS = r"^(npx|uvx|pipx|bunx|deno|node|bun|python[0-9.]*|uv|docker|podman)$"  # they start what follows them
_AFFIXES = re.compile(r"^(mcp-server-|server-|mcp-)|(-mcp-server|-mcp|-server|\.py|\.js|\.mjs)$")


def server_name(server: str) -> str:
    """A `[[servers]]` name for a URL (its host's first label) or a command (the package or script a runner such
    as npx starts, less `mcp-` and `server-` affixes, else the program): `npx -y @modelcontextprotocol/server-memory`
    is "memory", `uvx mcp-server-time` is "time"."""
    if server.startswith(("http://", "https://")):
        stem = (urlsplit(server).hostname or "").split(".")[0]
    else:
        words = shlex.split(server) or [""]
        program, rest = Path(words[0]).name, [w for w in words[1:] if not w.startswith("-")]
        target = rest[0] if rest and re.match(_RUNNERS, program) else program
        stem = Path(target.rsplit("@", 1)[0] if target.rfind("@") > 0 else target).name
    stem = _AFFIXES.sub("", stem.lower())
    stem = re.sub(r"[^a-z0-9_.-]+", "-", stem).strip("-._")[:63]
    return stem or "server"


@dataclass(frozen=True, slots=True)
class Starter:
    """What `signoff init` writes: the file and its text."""

    path: Path
    text: str
    private: bool = False  # the .env: readable by its owner only


def _toml(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string or list of strings is a TOML one too


def _config(directory: Path, server: ServerSettings, policy: str, port: int, approver: str) -> str:
    transport = f"command = {_toml(list(server.command))}" if server.command else f"url = {_toml(server.url)}"
    return f"""# signoff's config, written by `signoff init` (README: Configuration). Its secrets are in .env beside it,
# which signoff reads at start (a variable set in the environment wins). Serve it with:
#   signoff serve --config {shlex.quote(str(directory / "signoff.toml"))}

[gateway]
host = "127.0.0.1"
port = {port}
# public_url = "https://signoff.example.com"   # where approvers reach signoff: links in Slack point here
database_url = {_toml(f"sqlite:///{directory / 'signoff.db'}")}
approval_hold = "50s"                          # how long a call that needs approval is held open for a decision

[[agents]]                                     # who may call tools through signoff: give the agent this token
name = "agent"
token = "${{SIGNOFF_AGENT_TOKEN}}"

[[approvers]]                                  # who may decide: sign in to the approvals page with this token
name = {_toml(approver)}
token = "${{SIGNOFF_APPROVER_TOKEN}}"
# slack_user = "U0123ABCD"                     # to decide from Slack (README: Slack)

[[servers]]                                    # served at /mcp/{server.name}
name = {_toml(server.name)}
{transport}
policy = {_toml(policy)}

[web]
session_secret = "${{SIGNOFF_SESSION_SECRET}}"
"""


def _dotenv() -> str:
    return (
        "# signoff's secrets for the signoff.toml beside this file, read at start. Keep this file private.\n"
        f"SIGNOFF_AGENT_TOKEN={secrets.token_urlsafe(24)}\n"
        f"SIGNOFF_APPROVER_TOKEN={secrets.token_urlsafe(24)}\n"
        f"SIGNOFF_SESSION_SECRET={secrets.token_urlsafe(32)}\n"
    )


def _server(given: str | None, name: str | None) -> ServerSettings:
    if given is None:
        return ServerSettings(name=name or "demo", command=(sys.executable, "-m", "integrations.demo"), policy="")
    named = name or server_name(given)
    if given.startswith(("http://", "https://")):
        return ServerSettings(name=named, url=given, policy="")
    return ServerSettings(name=named, command=tuple(shlex.split(given)), policy="")


def _suggested_policy(server: ServerSettings, approver: str) -> tuple[str, list[str]]:
    """The policy `signoff policy suggest` writes for `server`, and its report (one line a tool)."""
    from integrations.policy_tools import list_tools
    from policies.suggest import report_lines, suggest_policy

    suggested = suggest_policy(anyio.run(list_tools, server), approvers=(approver,))
    return suggested.text, report_lines(suggested)


def cmd_init(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    try:
        server = _server(args.server, args.name)
    except ValueError as exc:  # pydantic's ValidationError is one: a name the config would refuse
        sys.stderr.write(f"signoff: cannot use that server: {exc}\n")
        return EXIT_CANNOT
    policy_file = directory / "policies" / f"{server.name}.json"
    starters = [directory / "signoff.toml", directory / DOTENV] + ([policy_file] if args.server else [])
    existing = [str(path) for path in starters if path.exists()]
    if existing:
        sys.stderr.write(f"signoff: refusing to overwrite {', '.join(existing)}; nothing was written\n")
        return EXIT_CANNOT
    files: list[Starter] = []
    report: list[str] = []
    if args.server:
        try:
            policy_text, report = _suggested_policy(server, args.approver)
        except UpstreamUnavailable as exc:
            sys.stderr.write(f"signoff: {exc}; nothing was written\n")
            return EXIT_CANNOT
        files.append(Starter(policy_file, policy_text))
        policy = f"policies/{server.name}.json"
    else:
        policy = "catalog:demo"
    files += [
        Starter(directory / "signoff.toml", _config(directory, server, policy, args.port, args.approver)),
        Starter(directory / DOTENV, _dotenv(), private=True),
    ]
    for starter in files:
        starter.path.parent.mkdir(parents=True, exist_ok=True)
        # "x": never replace a file that appeared since the check above; 0600 for the secrets from the start.
        fd = os.open(starter.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if starter.private else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(starter.text)
    out_lines = [*report, *(f"wrote {starter.path}" for starter in files)]
    config = directory / "signoff.toml"
    out_lines += [
        f"next: signoff serve --config {shlex.quote(str(config))}",
        f"  agents connect to http://127.0.0.1:{args.port}/mcp/{server.name} with SIGNOFF_AGENT_TOKEN from"
        f" {directory / DOTENV}; approvers sign in at http://127.0.0.1:{args.port}/approvals with"
        " SIGNOFF_APPROVER_TOKEN",
    ]
    if args.server:
        out_lines.append(f"  review {policy_file} (signoff policy check {shlex.quote(str(policy_file))})")
    sys.stdout.write("".join(f"{line}\n" for line in out_lines))
    return EXIT_OK


def add_init_command(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `signoff init`."""
    init = commands.add_parser("init", help="write a starter signoff.toml (and its .env of tokens) to serve at once")
    init.add_argument(
        "--server",
        metavar="URL-or-COMMAND",
        help='the MCP server to put behind signoff: an http(s):// URL or a command ("npx -y pkg"); default: the demo',
    )
    init.add_argument("--name", help="the server's name, served at /mcp/NAME (default: from the URL or command)")
    init.add_argument("--dir", default=".", help="where to write signoff.toml and .env (default: here)")
    init.add_argument("--port", type=int, default=8080, help="the port to serve on (default 8080)")
    init.add_argument("--approver", default="admin", help="the approver's name (default: admin)")
    init.set_defaults(func=cmd_init)

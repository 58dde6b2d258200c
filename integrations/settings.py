"""Configuration: one TOML file, `${VAR}` expanded from the environment, validated once at start.

This is the only module that reads the environment. Everything below `create_app(settings)` gets plain
values, so a bad config is refused before a socket opens, with the key that is wrong.
"""

import difflib
import ipaddress
import os
import re
import secrets
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from integrations.config_faults import format_validation_error
from integrations.errors import ConfigError
from policies import LimitsUnavailable, parse_duration

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
CATALOG = Path(__file__).resolve().parent.parent / "policies" / "catalog"
ServerName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]


def is_loopback(host: str) -> bool:
    """Whether `host` only listens on, or is only reached from, this machine: localhost, 127.0.0.0/8 or ::1."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def duration(value: str | float) -> float:
    """Seconds in "50s", "15m", "1h", "2d" or a bare number of seconds; ValueError otherwise."""
    seconds = parse_duration(value)
    if seconds is None:
        raise ValueError(f"{value!r} is not a duration: use a positive number of seconds or e.g. 30s, 15m, 1h")
    return seconds


def approver_token(explicit: str | None = None, config: "Settings | None" = None) -> str | None:
    """The token `signoff approve`/`reject` sign in with: `--token`, else $SIGNOFF_APPROVER_TOKEN, else that
    variable in the .env beside the config (where `signoff init` puts it)."""
    if explicit or os.environ.get("SIGNOFF_APPROVER_TOKEN"):
        return explicit or os.environ.get("SIGNOFF_APPROVER_TOKEN")
    if config is None or not Path(config.source).is_file():
        return None
    return dotenv_values(Path(config.source)).get("SIGNOFF_APPROVER_TOKEN") or None


def named_config(explicit: str | None = None) -> str | None:
    """The config a command was pointed at: `--config`, else $SIGNOFF_CONFIG; None when neither names one."""
    return explicit or os.environ.get("SIGNOFF_CONFIG")


def config_file(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The config a command that reads or changes signoff's state needs: `--config`, else $SIGNOFF_CONFIG, else
    ./signoff.toml; it must exist (such a command never falls back to the demo, nor creates a database).

    Raises:
        ConfigError: there is no such file, naming where it looked.
    """
    env = os.environ if environ is None else environ
    named = explicit or env.get("SIGNOFF_CONFIG")
    path = Path(named or "signoff.toml")
    if path.is_file():
        return path
    if explicit:
        raise ConfigError(f"{path}: no such config file (given with --config)")
    if named:
        raise ConfigError(f"{path}: no such config file (named by $SIGNOFF_CONFIG)")
    raise ConfigError(
        f"no config: there is no signoff.toml in {Path.cwd()}, and neither --config nor $SIGNOFF_CONFIG names one."
        " This command reads a running gateway's state: give --config PATH, or write a starter config with"
        " `signoff init`"
    )


def load_config(explicit: str | None = None) -> "Settings":
    """`load_settings` of the config `config_file` finds; for every command but `serve`, `init` and `policy`'s.

    Raises:
        ConfigError: no config file, or as `load_settings`.
    """
    return load_settings(config_file(explicit))


DOTENV = ".env"  # beside the config: `KEY=VALUE` lines for its ${VAR}s (`signoff init` writes the tokens there)


def dotenv_values(config_path: Path) -> dict[str, str]:
    """The variables of the `.env` file beside `config_path` (none when there is none); the environment wins.

    Raises:
        ConfigError: the file exists but cannot be read.
    """
    path = config_path.resolve().parent / DOTENV
    if not path.is_file():
        return {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it: {exc}") from exc
    values: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, sep, value = text.removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(
                f"{path}:{number}: not a KEY=VALUE line (signoff reads this file, beside its config, for the"
                " config's ${VAR}s)"
            )
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for a stdio upstream: signoff's own (PATH, HOME for npx) plus the server's `env`."""
    return {**os.environ, **extra}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    database_url: str = "sqlite:///signoff.db"
    approval_hold: float = 50.0
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    upstream_timeout: float = 300.0
    policy_poll: float = 1.0  # how often policy files are checked for edits (SIGHUP checks at once)
    body_timeout: float = 10.0  # how long a request's body may take to arrive, on every route: then 408
    # Where replicas share what must agree (rate limits, wake-ups, replay and sign-in counters): Redis when set,
    # otherwise the database. A secret: its URL may carry a password.
    redis_url: SecretStr | None = None
    # What a call a limit applies to gets while that store cannot be reached: refused (fail closed) or let through
    # uncounted; a policy's own `limits_unavailable` overrides it.
    limits_unavailable: LimitsUnavailable = LimitsUnavailable.REFUSE

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return value

    @field_validator("approval_hold", "upstream_timeout", "policy_poll", "body_timeout", mode="before")
    @classmethod
    def _duration(cls, value: str | float) -> float:
        return duration(value)

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


class AgentSettings(_Model):
    name: str = Field(min_length=1)
    # Length and uniqueness: `token_faults`, so one start lists every token fault. Optional only with [auth]:
    # an agent that signs in with OAuth access tokens needs no static one.
    token: SecretStr | None = None
    groups: tuple[str, ...] = ()  # what `"caller": "groups"` conditions test
    servers: tuple[str, ...] | None = None  # the servers this agent may reach; None (omitted): all of them
    policies: dict[str, str] = Field(default_factory=dict)  # server name -> this agent's own policy file for it

    def may_reach(self, server: str) -> bool:
        return self.servers is None or server in self.servers


def _http_url(value: str, what: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{what} must start with https:// (or http:// on loopback)")
    return value


class AuthSettings(_Model):
    """`[auth]`: agents may bring OAuth 2.1 access tokens (JWTs) from this issuer, issued for `audience`."""

    issuer: str
    audience: str
    agent_claim: str = Field(default="sub", min_length=1)
    groups_claim: str = Field(default="groups", min_length=1)
    allow_unlisted: bool = False  # an identity no [[agents]] entry names: refused (403) unless this is true
    scopes: tuple[str, ...] = ()  # scopes every token must carry (its `scope` or `scp` claim); none: any token

    @field_validator("issuer", "audience")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, "issuer and audience")


class OidcSettings(_Model):
    """`[web.oidc]`: approvers sign in to the web page at this OpenID provider (authorization code + PKCE)."""

    issuer: str
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None  # None: a public client (PKCE only)
    approver_claim: str = Field(default="preferred_username", min_length=1)
    groups_claim: str | None = None  # a claim whose values add to the approver's configured groups
    scopes: tuple[str, ...] = ("openid", "profile")

    @field_validator("issuer")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, "issuer")


class ApproverSettings(_Model):
    name: str = Field(min_length=1)
    token: SecretStr | None = None
    slack_user: str | None = None
    groups: tuple[str, ...] = ()


class ServerSettings(_Model):
    name: ServerName
    command: tuple[str, ...] | None = None
    url: str | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    env: dict[str, SecretStr] = Field(default_factory=dict)
    cwd: str | None = None
    policy: str

    @model_validator(mode="after")
    def _one_transport(self) -> "ServerSettings":
        if (self.command is None) == (self.url is None):
            raise ValueError(f"server {self.name!r} needs exactly one of `command` (stdio) or `url` (Streamable HTTP)")
        if self.command is not None and not self.command:
            raise ValueError(f"server {self.name!r}: `command` is empty")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"server {self.name!r}: `url` must start with http:// or https://")
        return self


class WebhookSettings(_Model):
    url: str
    secret: SecretStr
    events: tuple[str, ...] = ("approval.*",)

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("a webhook url must start with http:// or https://")
        return value


class SlackSettings(_Model):
    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    channel: str | None = None
    api_url: str = "https://slack.com/api/"
    # Approver groups as Slack user groups ({dba = "S0123ABCD"}): requests for group:dba mention <!subteam^S0123ABCD>.
    groups: dict[str, str] = Field(default_factory=dict)


class WebSettings(_Model):
    # Signs the web page's session cookies. Unset: a random one per process (a warning at start), so
    # sign-ins end at a restart and do not carry across replicas.
    session_secret: SecretStr | None = None
    token_login: bool = True  # approvers may sign in with their token; false: single sign-on only
    oidc: OidcSettings | None = None

    @field_validator("session_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("the session secret must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value


class TelemetrySettings(_Model):
    """Where traces go: an OTLP/HTTP collector's base URL (spans are posted to `{otlp_endpoint}/v1/traces`); and
    where audit rows are sent as they are committed (`audit_to`: JSON lines on stdout, syslog at `syslog_address`,
    OpenTelemetry logs to `{otlp_endpoint}/v1/logs`)."""

    otlp_endpoint: str | None = None
    service_name: str = "signoff"
    audit_to: tuple[Literal["stdout", "syslog", "otlp"], ...] = ()
    syslog_address: str = "/dev/log"  # a Unix socket, or host:port for UDP

    @model_validator(mode="after")
    def _otlp_for_logs(self) -> "TelemetrySettings":
        if "otlp" in self.audit_to and self.otlp_endpoint is None:
            raise ValueError('audit_to includes "otlp", so otlp_endpoint must be set')
        if len(set(self.audit_to)) != len(self.audit_to):
            raise ValueError("audit_to names a destination twice")
        return self

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"otlp_endpoint must be an http:// or https:// URL, not {value!r}")
        return value


class AuditSettings(_Model):
    """`[audit]`: signed checkpoints of the audit chain (issue 18); none are made without a signing key."""

    checkpoint_rows: int = Field(default=1000, ge=1)  # a checkpoint once this many rows follow the last one
    checkpoint_seconds: float = 60.0  # and at least this often while any row is unanchored
    signing_key: SecretStr | None = (
        None  # Ed25519: PKCS#8 PEM or base64 of the 32 raw bytes, e.g. "${SIGNOFF_AUDIT_KEY}"
    )
    signing_key_file: str | None = None  # or a file holding it (relative to the config's directory)
    checkpoint_file: str | None = None  # each checkpoint is also appended here as a JSON line

    @field_validator("checkpoint_seconds", mode="before")
    @classmethod
    def _duration(cls, value: str | float) -> float:
        return duration(value)

    @model_validator(mode="after")
    def _one_key(self) -> "AuditSettings":
        if self.signing_key is not None and self.signing_key_file is not None:
            raise ValueError("audit: give signing_key or signing_key_file, not both")
        return self


class Settings(_Model):
    gateway: GatewaySettings = GatewaySettings()
    agents: tuple[AgentSettings, ...] = ()
    approvers: tuple[ApproverSettings, ...] = ()
    servers: tuple[ServerSettings, ...] = ()
    slack: SlackSettings | None = None
    webhooks: tuple[WebhookSettings, ...] = ()
    web: WebSettings = WebSettings()
    auth: AuthSettings | None = None
    telemetry: TelemetrySettings = TelemetrySettings()
    audit: AuditSettings = AuditSettings()
    source: str = "<defaults>"
    demo: bool = False

    @model_validator(mode="after")
    def _unique_names(self) -> "Settings":
        for kind, names in (
            ("servers", [s.name for s in self.servers]),
            ("agents", [a.name for a in self.agents]),
            ("approvers", [a.name for a in self.approvers]),
        ):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{kind}: duplicate name(s) {', '.join(duplicates)}")
        if self.auth is None:
            tokenless = [a.name for a in self.agents if a.token is None]
            if tokenless:
                raise ValueError(
                    f"agents {', '.join(tokenless)}: no `token`; an agent needs one unless [auth] lets agents bring"
                    " OAuth access tokens"
                )
        if not self.web.token_login and self.web.oidc is None:
            raise ValueError("web.token_login is false and [web.oidc] is not set, so no approver could sign in")
        return self

    @model_validator(mode="after")
    def _agent_rights(self) -> "Settings":
        known = [s.name for s in self.servers]
        faults: list[str] = []
        for i, agent in enumerate(self.agents):
            for j, name in enumerate(agent.servers or ()):
                if name not in known:
                    faults.append(f"agents[{i}].servers[{j}]: {name!r} {_no_such_server(name, known)}")
            for name in agent.policies:
                if name not in known:
                    faults.append(f"agents[{i}].policies.{name}: {name!r} {_no_such_server(name, known)}")
                elif not agent.may_reach(name):
                    reach = ", ".join(agent.servers or ()) or "none"
                    faults.append(
                        f"agents[{i}].policies.{name}: agent {agent.name!r} may not reach server {name!r} (its"
                        f" servers: {reach}), so this policy would never apply; add {name!r} to its servers or"
                        " remove the policy"
                    )
        if faults:
            raise ValueError("".join(f"{fault}\n" for fault in faults))  # one line each (format_validation_error)
        return self

    def agent(self, name: str) -> "AgentSettings | None":
        """The `[[agents]]` entry named `name`, if there is one."""
        return next((a for a in self.agents if a.name == name), None)

    @property
    def approver_names(self) -> frozenset[str]:
        """What a policy's `approval.approvers` may name: each approver's name and each `group:NAME` they are in."""
        return frozenset(a.name for a in self.approvers) | {f"group:{g}" for a in self.approvers for g in a.groups}


def _no_such_server(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    listing = f"configured: {', '.join(known) or 'none'}"
    return "names no configured server (" + (f'did you mean "{close[0]}"? ' if close else "") + listing + ")"


MIN_TOKEN_LENGTH = 16  # agents' and approvers' alike: both are bearer credentials accepted over the network


def token_faults(settings: Settings) -> list[str]:
    """Every fault in the agents' and approvers' tokens, each as `key path: what is wrong`; never the token itself.

    A token must be at least MIN_TOKEN_LENGTH characters, and no two may be the same: an approver sharing an
    agent's token would let that agent approve its own calls through /api.
    """
    faults: list[str] = []
    first: dict[str, tuple[str, str, str]] = {}  # token -> (where, kind, name) of its first holder
    holders: list[tuple[str, str, str, SecretStr | None]] = [
        *((f"agents[{i}]", "agent", a.name, a.token) for i, a in enumerate(settings.agents)),
        *((f"approvers[{i}]", "approver", a.name, a.token) for i, a in enumerate(settings.approvers)),
    ]
    for where, kind, name, secret in holders:
        if secret is None:
            continue
        token = secret.get_secret_value()
        if len(token) < MIN_TOKEN_LENGTH:
            faults.append(
                f"{where}.token: is {len(token)} characters; a token needs at least {MIN_TOKEN_LENGTH}"
                " (e.g. `openssl rand -hex 32`)"
            )
        if token not in first:
            first[token] = (where, kind, name)
            continue
        other_where, other_kind, other_name = first[token]
        if other_kind == "agent" and kind == "approver":
            why = "so that agent could approve its own calls through /api"
        elif kind == "approver":
            why = "so either could decide as the other"
        else:
            why = "so the gateway could not tell the agents apart"
        faults.append(
            f"{where}.token: is the same as {other_where}.token ({other_kind} {other_name!r}), {why};"
            " give each their own"
        )
    return faults


def expand(value: Any, environ: Mapping[str, str], path: str = "") -> Any:
    """Replace `${VAR}` in every string; a variable that is not set is an error naming the key."""
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                raise ConfigError(f"{path or 'config'}: environment variable {name} is not set")
            return environ[name]

        return _VAR.sub(substitute, value)
    if isinstance(value, dict):
        return {k: expand(v, environ, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, environ, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _demo_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    token = environ.get("SIGNOFF_DEMO_TOKEN") or secrets.token_urlsafe(18)
    return {
        "agents": [{"name": "demo-agent", "token": token}],
        "approvers": [
            {"name": "demo-approver", "token": environ.get("SIGNOFF_DEMO_APPROVER_TOKEN") or secrets.token_urlsafe(18)}
        ],
        "servers": [
            {
                "name": "demo",
                "command": [sys.executable, "-m", "integrations.demo"],
                "policy": str(CATALOG / "demo.json"),
            }
        ],
    }


def _policy_path(policy: Any, base_dir: Path) -> Any:
    """A policy file as the config names it: `catalog:NAME`, or a path relative to the config's directory (or, if
    nothing is there, to the working directory)."""
    if isinstance(policy, str) and policy.startswith("catalog:"):
        return str(CATALOG / f"{policy.removeprefix('catalog:')}.json")
    if isinstance(policy, str) and not Path(policy).is_absolute():
        resolved = base_dir / policy
        return str(resolved if resolved.exists() else Path.cwd() / policy)
    return policy


LISTEN = "SIGNOFF_LISTEN"  # host:port, from `signoff serve` to its workers


def listening_on(settings: "Settings", host: str | None, port: int | None) -> "Settings":
    """`settings` with `--host`/`--port` in place of the config's, where given."""
    update: dict[str, Any] = {}
    if host:
        update["host"] = host
    if port is not None:
        update["port"] = port
    if not update:
        return settings
    return settings.model_copy(update={"gateway": settings.gateway.model_copy(update=update)})


METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name: it reads it when first imported


def tell_workers(settings: "Settings") -> None:
    """Put in this process's environment, for the workers of `signoff serve --workers N` to read back with
    `worker_settings`: the config file, and where the parent listens (so links and origin are the parent's)."""
    os.environ["SIGNOFF_CONFIG"] = str(Path(settings.source).resolve())
    os.environ[LISTEN] = f"{settings.gateway.host}:{settings.gateway.port}"
    # The workers' metrics, added up at each scrape (integrations/metrics.py): a directory of this run's own, since
    # prometheus_client would add a previous run's files to this one's counts.
    os.environ[METRICS_DIR] = tempfile.mkdtemp(prefix="signoff-metrics-")


def forget_workers() -> None:
    """Remove what `tell_workers` made for the workers that have now stopped: their metrics' files."""
    directory = metrics_directory()
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        del os.environ[METRICS_DIR]


def metrics_directory() -> str | None:
    """Where `signoff serve --workers N` keeps every worker's metrics (set by `tell_workers`); None: one process."""
    return os.environ.get(METRICS_DIR) or None


def worker_settings(environ: Mapping[str, str] | None = None) -> "Settings":
    """The settings a worker process serves: $SIGNOFF_CONFIG (never the demo), on $SIGNOFF_LISTEN if set.

    Raises:
        ConfigError: as `load_settings(demo=False)`.
    """
    env = os.environ if environ is None else environ
    settings = load_settings(environ=env, demo=False)
    host, _, port = env.get(LISTEN, "").rpartition(":")
    return listening_on(settings, host or None, int(port) if port.isdigit() else None)


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None, *, demo: bool = True
) -> Settings:
    """Read the TOML config at `path` (or $SIGNOFF_CONFIG, or ./signoff.toml).

    With no file at all (or one with no `[[servers]]`), signoff runs its demo: one stdio demo upstream, one agent
    whose token is $SIGNOFF_DEMO_TOKEN or a fresh random one, one approver whose token is
    $SIGNOFF_DEMO_APPROVER_TOKEN or a fresh random one, SQLite in the working directory. With `demo=False` (the
    Procfile's entry point) that is refused instead: a deployment must say what it serves.

    Raises:
        ConfigError: the file is missing, not TOML, names an unset variable, or fails validation; or, with
            `demo=False`, there is no file or it configures no server.
    """
    env = os.environ if environ is None else environ
    explicit = path is not None or "SIGNOFF_CONFIG" in env
    config_path = Path(path if path is not None else env.get("SIGNOFF_CONFIG", "signoff.toml"))
    raw: dict[str, Any] = {}
    if config_path.exists():
        try:
            raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from exc
        data = expand(raw, {**dotenv_values(config_path), **env})
        source = str(config_path)
        base_dir = config_path.resolve().parent
    elif explicit:
        raise ConfigError(f"{config_path}: no such config file")
    else:
        data, source, base_dir = {}, "<defaults>", Path.cwd()
    if not data.get("servers") and not demo:
        if source == "<defaults>":
            raise ConfigError(
                f"no config: there is no signoff.toml in {Path.cwd()} and $SIGNOFF_CONFIG is not set. A deployment"
                " needs a config naming its agents, approvers and servers; the demo runs only from `signoff serve`,"
                " on loopback"
            )
        raise ConfigError(f"{source}: no [[servers]] configured, so there is nothing to serve")
    if not data.get("servers"):
        demo_data = _demo_settings(env)
        data = {**demo_data, **data, "servers": demo_data["servers"], "demo": True}
    if "PORT" in env and "port" not in data.get("gateway", {}):
        data.setdefault("gateway", {})["port"] = int(env["PORT"])
    for server in data.get("servers", []):
        server["policy"] = _policy_path(server.get("policy"), base_dir)
    audit = data.get("audit")
    if isinstance(audit, dict):
        for key in ("signing_key_file", "checkpoint_file"):
            if isinstance(audit.get(key), str) and not Path(audit[key]).is_absolute():
                audit[key] = str(base_dir / audit[key])
    for agent in data.get("agents", []):
        if isinstance(agent, dict) and isinstance(agent.get("policies"), dict):
            agent["policies"] = {name: _policy_path(p, base_dir) for name, p in agent["policies"].items()}
    try:
        return Settings.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid configuration:\n{format_validation_error(exc, raw, Settings)}") from exc

"""A real OpenID provider on loopback for the OAuth and single sign-on tests: panva's certified `oidc-provider`.

`tests/fakes/idp/provider.mjs` configures it; its npm packages (pinned by `package-lock.json`, Node 22 among them,
so only npm need be on the machine) are installed once into ~/.cache/signoff-idp/<digest of the lock>. Its keys
are made here, so a test can rotate them or sign a token the provider never would (expired, wrong issuer, ...).
"""

import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from anyio.abc import Process
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

HERE = Path(__file__).parent / "idp"
CACHE = Path.home() / ".cache" / "signoff-idp"
WEB_CLIENT, WEB_SECRET = "signoff", "signoff-web-client-secret"
AGENT_CLIENT, AGENT_SECRET = "ci-bot", "ci-bot-client-secret"
STRANGER_CLIENT, STRANGER_SECRET = "stranger", "stranger-client-secret"
USERS = {
    "alice": {"password": "alice-password", "groups": ["dba", "sso-reviewers"]},
    "bob": {"password": "bob-password", "groups": ["dba", "ops"]},  # "ops" only at the provider
    "zed": {"password": "zed-password", "groups": []},  # known to the provider, not an approver
}


@dataclass(frozen=True)
class Key:
    """An RSA signing key of the provider's, with its kid."""

    kid: str
    private: rsa.RSAPrivateKey

    @staticmethod
    def new(kid: str) -> "Key":
        return Key(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))


def install() -> Path:
    """The folder holding the provider's node_modules, installed (`npm ci`) on first use."""
    digest = hashlib.sha256((HERE / "package-lock.json").read_bytes()).hexdigest()[:16]
    prefix = CACHE / digest
    if (prefix / "node_modules" / "oidc-provider" / "package.json").exists() and _node(prefix).exists():
        return prefix
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("CI") == "true":
            pytest.fail("npm is missing under CI: .ci/run installs it before the tests (they need oidc-provider)")
        pytest.skip("npm is not on PATH: the OpenID provider tests install oidc-provider (npm) with it")
    staging = CACHE / f"{digest}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(HERE / name, staging / name)
    subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=staging, check=True, timeout=600)
    try:
        staging.rename(prefix)
    except OSError:  # another run installed it first
        shutil.rmtree(staging, ignore_errors=True)
    return prefix


def _node(prefix: Path) -> Path:
    return prefix / "node_modules" / ".bin" / "node"


@dataclass
class IdentityProvider:
    """A running provider: its issuer URL, its keys (the first signs), and helpers to get or forge tokens."""

    issuer: str
    keys: list[Key]
    port: int
    config: dict[str, Any] = field(default_factory=dict)
    process: Process | None = None

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    async def client_credentials(
        self, resource: str, client: str = AGENT_CLIENT, secret: str = AGENT_SECRET, scope: str | None = None
    ) -> str:
        """An access token for `resource` (RFC 8707), as an agent gets one: client_credentials, a JWT."""
        data = {"grant_type": "client_credentials", "resource": resource, **({"scope": scope} if scope else {})}
        async with httpx2.AsyncClient(timeout=10) as http:
            response = await http.post(self.token_endpoint, data=data, auth=(client, secret))
        if response.status_code != 200:
            raise AssertionError(f"the provider refused a token: {response.status_code} {response.text}")
        token: str = response.json()["access_token"]
        return token

    def sign(self, claims: dict[str, Any], *, key: Key | None = None, kid: str | None = None, **header: Any) -> str:
        """A JWT signed with one of the provider's keys (or `key`), for tokens the provider itself would not issue."""
        key = key or self.keys[0]
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": kid or key.kid, **header})

    def claims(self, audience: str, **overrides: Any) -> dict[str, Any]:
        """What the provider puts in an agent's access token, with `overrides`."""
        now = int(time.time())
        base = {"iss": self.issuer, "aud": audience, "sub": AGENT_CLIENT, "iat": now, "exp": now + 300}
        return {**base, **overrides}


async def _start(config: dict[str, Any], folder: Path) -> tuple[Process, str]:
    prefix = install()
    path = folder / "idp-config.json"
    path.write_text(json.dumps(config))
    stderr = (folder / "idp-stderr.log").open("ab")
    # The script is run from the cache, beside its node_modules, so `import 'oidc-provider'` resolves there.
    script = prefix / "provider.mjs"
    shutil.copy(HERE / "provider.mjs", script)
    process = await anyio.open_process([str(_node(prefix)), str(script), str(path)], stderr=stderr)
    stderr.close()
    if process.stdout is None:
        raise RuntimeError("no stdout from the provider")
    line = b""
    with anyio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await process.stdout.receive(1)
            line += chunk
    return process, json.loads(line)["issuer"]


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(5):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    await process.aclose()


@asynccontextmanager
async def identity_provider(
    folder: Path, *, path: str = "", keys: Sequence[Key] | None = None, agents: dict[str, Any] | None = None
) -> AsyncIterator[IdentityProvider]:
    """Serve the provider on a free loopback port (its issuer is http://127.0.0.1:PORT`path`)."""
    signing = list(keys or [Key.new("key-1")])
    config: dict[str, Any] = {
        "port": 0,
        "path": path,
        "jwks": {"keys": [_private_jwk(k) for k in signing]},
        "clients": [
            {
                "client_id": WEB_CLIENT,
                "client_secret": WEB_SECRET,
                # A native client: any loopback port is allowed (RFC 8252 section 7.3), so signoff's can vary.
                "application_type": "native",
                "redirect_uris": ["http://127.0.0.1/login/oidc/callback"],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
            },
            *(
                {
                    "client_id": client,
                    "client_secret": secret,
                    "grant_types": ["client_credentials"],
                    "response_types": [],
                    "redirect_uris": [],
                }
                for client, secret in ((AGENT_CLIENT, AGENT_SECRET), (STRANGER_CLIENT, STRANGER_SECRET))
            ),
        ],
        "users": USERS,
        "agents": agents if agents is not None else {AGENT_CLIENT: {"groups": ["automation"]}},
    }
    process, issuer = await _start(config, folder)
    port = int(issuer.split(":")[2].split("/")[0])
    idp = IdentityProvider(issuer=issuer, keys=signing, port=port, config={**config, "port": port}, process=process)
    try:
        yield idp
    finally:
        if idp.process is not None:
            await _stop(idp.process)


async def restart(idp: IdentityProvider, folder: Path, keys: Sequence[Key]) -> None:
    """Start the provider again on the same port with `keys` (the first signs): a key rotation."""
    if idp.process is not None:
        await _stop(idp.process)
    idp.config["jwks"] = {"keys": [_private_jwk(k) for k in keys]}
    idp.process, _ = await _start(idp.config, folder)
    idp.keys = list(keys)


async def stop(idp: IdentityProvider) -> None:
    """The provider goes down (until `restart`)."""
    if idp.process is not None:
        await _stop(idp.process)
        idp.process = None


def _private_jwk(key: Key) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.private))
    return {**jwk, "kid": key.kid, "alg": "RS256", "use": "sig"}

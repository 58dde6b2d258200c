"""The audit log's signing key, read from `[audit] signing_key` or `signing_key_file`; never logged or printed."""

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from approvals.checkpoints import read_private_key, read_public_key
from approvals.errors import BadKey
from integrations.errors import ConfigError
from integrations.settings import AuditSettings


def signing_key(audit: AuditSettings) -> Ed25519PrivateKey | None:
    """The configured Ed25519 signing key, or None when none is configured.

    Raises:
        ConfigError: the key or its file cannot be read as an Ed25519 key (the message never holds the key).
    """
    if audit.signing_key is not None:
        where, text = "audit.signing_key", audit.signing_key.get_secret_value()
    elif audit.signing_key_file is not None:
        where = f"audit.signing_key_file ({audit.signing_key_file})"
        try:
            text = Path(audit.signing_key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read the file: {getattr(exc, 'strerror', None) or exc}") from exc
    else:
        return None
    try:
        return read_private_key(text)
    except BadKey as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def public_keys(given: list[str] | None, audit: AuditSettings | None) -> list[Ed25519PublicKey]:
    """The keys `verify` checks signatures with: each `--key` (the key's text, or a file holding it), else the
    public half of the configured signing key (none: an empty list).

    Raises:
        ConfigError: a `--key` is neither a key nor a readable file holding one, or the configured key is bad.
    """
    if not given:
        key = None if audit is None else signing_key(audit)
        return [] if key is None else [key.public_key()]
    keys = []
    for text in given:
        path = Path(text)
        try:
            if path.is_file():
                text = path.read_text(encoding="utf-8")
            keys.append(read_public_key(text))
        except (OSError, BadKey) as exc:
            raise ConfigError(f"--key {str(path)[:80]}: {exc}") from exc
    return keys

"""Policy JSON text to a compiled `Policy`, with every fault reported by JSON path: the package's way in.

`check_policy` returns all faults (errors and warnings) and never raises; `load_policy` raises `PolicyInvalid` when
any of them is an error. Every PolicyLayer v1 document loads and means the same thing. The work is done by
`jsontext` (text to values), `document` and `clauses` (values to the model) and `pitfalls` (warnings).
"""

import hashlib
import json
from collections.abc import Collection
from typing import Any

from policies.checker import Checker
from policies.document import build_policy
from policies.errors import Fault, PolicyInvalid
from policies.jsontext import read_json
from policies.model import Policy

__all__ = ["check_policy", "load_policy"]


def _digest(doc: Any) -> str:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _load(text: str | bytes, source: str, approvers: Collection[str] | None) -> tuple[Policy | None, list[Fault]]:
    try:
        doc, fault = read_json(text, "the policy", strict=True)
        if fault is not None:
            return None, [fault]
        check = Checker()
        policy = build_policy(check, doc, source, _digest(doc), approvers)
    except RecursionError:
        # read_json reports text nested deeper than the parser goes; a document just under that depth can still
        # overflow the digest, or a message that shows a deep value.
        return None, [Fault("$", "the policy is nested too deeply to read")]
    return policy, check.faults


def check_policy(
    text: str | bytes, *, source: str = "<policy>", approvers: Collection[str] | None = None
) -> list[Fault]:
    """Return every fault in a policy document, errors and warnings, without raising.

    Args:
        text: The policy JSON.
        source: Where it came from, for messages.
        approvers: The configured approver names and `group:NAME`s; when given, naming any other approver in
            `approval.approvers` is an error (a request no one could decide).

    Returns:
        Faults in document order; empty when the policy is clean.
    """
    return _load(text, source, approvers)[1]


def load_policy(text: str | bytes, *, source: str = "<policy>", approvers: Collection[str] | None = None) -> Policy:
    """Parse, validate and compile a policy document.

    Args:
        text: The policy JSON.
        source: Where it came from (a file name), kept on the Policy and used in messages.
        approvers: As for `check_policy`: the configured approver names and groups, or None not to check them.

    Returns:
        The compiled policy. Warnings do not stop it; read them with `check_policy`.

    Raises:
        PolicyInvalid: The document has at least one error; `.faults` lists every fault.
    """
    policy, faults = _load(text, source, approvers)
    if policy is None:
        raise PolicyInvalid(source, faults)
    return policy

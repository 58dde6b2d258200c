"""Arguments an approver edited: what changed (a small JSON diff), said in words, with redacted values kept hidden.

Pure values. The edited call is checked again against the policy by the edge that received it
(`integrations.editing`); the domain records it (`service.decide`) and these functions describe it.
"""

import json
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"
_MISSING = object()

__all__ = ["REDACTED", "arguments_diff", "changes_text", "restore_redacted"]


def _at(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def restore_redacted(original: Mapping[str, Any], edited: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """`edited` with each redacted path that still reads "[redacted]" given back its original value.

    The approver never saw those values (the page, Slack and the API show the placeholder), so sending the
    placeholder back means "leave it as it was", never "set it to the text [redacted]".
    """
    result: dict[str, Any] = json.loads(json.dumps(edited))
    for path in paths:
        parts = path.split(".")
        node: Any = result
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        before = _at(original, path)
        if isinstance(node, dict) and node.get(parts[-1]) == REDACTED and before is not _MISSING:
            node[parts[-1]] = before
    return result


def _hidden(path: str, paths: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + ".") or p.startswith(path + ".") for p in paths)


def arguments_diff(
    before: Mapping[str, Any], after: Mapping[str, Any], redact: Iterable[str] = ()
) -> dict[str, dict[str, Any]]:
    """What an edit did, by dotted path: `added` (new values), `removed` (old values), `changed` ({from, to}).

    Objects are compared key by key; any other value (arrays too) as a whole. A value at or under a redacted
    path reads "[redacted]", on both sides: the diff is shown and audited, the value never is.
    """
    paths = tuple(redact)
    diff: dict[str, dict[str, Any]] = {"added": {}, "removed": {}, "changed": {}}

    def shown(path: str, value: Any) -> Any:
        return REDACTED if _hidden(path, paths) else value

    def walk(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str) -> None:
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}{key}"
            if key not in new:
                diff["removed"][path] = shown(path, old[key])
            elif key not in old:
                diff["added"][path] = shown(path, new[key])
            elif isinstance(old[key], dict) and isinstance(new[key], dict):
                walk(old[key], new[key], path + ".")
            elif json.dumps(old[key], sort_keys=True) != json.dumps(new[key], sort_keys=True):
                diff["changed"][path] = {"from": shown(path, old[key]), "to": shown(path, new[key])}

    walk(before, after, "")
    return {kind: entries for kind, entries in diff.items() if entries}


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def changes_text(diff: Mapping[str, Mapping[str, Any]]) -> str:
    """The diff in one line, e.g. `record_id "r-1" -> "r-2"; note added "urgent"; force removed`."""
    parts = [f"{path} {_value(c['from'])} -> {_value(c['to'])}" for path, c in diff.get("changed", {}).items()]
    parts += [f"{path} added {_value(v)}" for path, v in diff.get("added", {}).items()]
    parts += [f"{path} removed" for path in diff.get("removed", {})]
    return "; ".join(parts) or "no change"

"""Config faults as people read them: each at its key path, naming the list entry it is in (`servers[0] (fs)`), an
unknown key with the key most likely meant (difflib, as `signoff policy check` does) and the keys allowed there.

Pure formatting of a pydantic ValidationError against the config as written; it reads nothing.
"""

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["format_validation_error"]

_INTERNAL = ("source", "demo")  # Settings fields signoff sets itself, never a key of the file


def _where(loc: tuple[int | str, ...], raw: Mapping[str, Any]) -> str:
    """A key path as people read it: `servers[0] (fs).comand`, naming each list entry that has a name."""
    where, node = "", raw
    for part in loc:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
        node = _child(node, part)
        if isinstance(part, int) and isinstance(node, Mapping) and isinstance(node.get("name"), str):
            where += f" ({node['name']})"
    return where.lstrip(".")


def _child(node: Any, part: int | str) -> Any:
    if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
        return node[part]
    if isinstance(part, str) and isinstance(node, Mapping):
        return node.get(part)
    return None


def _model_at(loc: tuple[int | str, ...], root: type[BaseModel]) -> type[BaseModel] | None:
    """The settings model a key path ends in (list entries and optional sections looked through), if any."""
    model: type[BaseModel] | None = root
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        annotation = model.model_fields[part].annotation
        model = next((m for m in _models_in(annotation)), None)
    return model


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def _unknown_key(loc: tuple[int | str, ...], root: type[BaseModel]) -> str:
    """What to say of a key the settings do not take: the closest known key, and the ones there are."""
    model = _model_at(loc[:-1], root)
    if model is None:
        return "unknown key"
    known = [name for name in model.model_fields if name not in _INTERNAL]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    hint = f'did you mean "{close[0]}"? ' if close else ""
    return f"unknown key ({hint}known here: {', '.join(known)})"


def format_validation_error(exc: ValidationError, raw: Mapping[str, Any], root: type[BaseModel]) -> str:
    """Every fault of `exc`, one line each at its key path in `raw` (the config as written) under `root`."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        where = _where(loc, raw)
        message = str(error["msg"]).removeprefix("Value error, ") if error["type"] == "value_error" else error["msg"]
        if error["type"] == "extra_forbidden":
            message = _unknown_key(loc, root)
        if not where and "\n" in message:  # a check across sections: each of its lines names its own key
            lines += [f"  {line}" for line in message.splitlines()]
        else:
            lines.append(f"  {where or 'config'}: {message}")
    return "\n".join(lines)

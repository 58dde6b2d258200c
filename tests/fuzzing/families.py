"""The families by name, and the case of (family, seed, index): the only way cases are made."""

import random
from collections.abc import Callable, Iterator
from typing import Any

from tests.fuzzing.case import Case, Target
from tests.fuzzing.mcp import (
    gen_cancelled,
    gen_deep,
    gen_envelope,
    gen_meta,
    gen_stdio_meta,
    gen_transport,
    gen_unicode,
)
from tests.fuzzing.routes import gen_api, gen_oversized_limited, gen_oversized_other, gen_slack, gen_web
from tests.fuzzing.values import header_text

FAMILIES: dict[str, Callable[[random.Random, Target], dict[str, Any]]] = {
    "envelope": gen_envelope,
    "unicode": gen_unicode,
    "meta": gen_meta,
    "stdio_meta": gen_stdio_meta,
    "cancelled": gen_cancelled,
    "transport": gen_transport,
    "deep": gen_deep,
    "api": gen_api,
    "slack": gen_slack,
    "web": gen_web,
    "oversized_limited": gen_oversized_limited,
    "oversized_other": gen_oversized_other,
}


def case(family: str, seed: int, index: int, target: Target) -> Case:
    """The `index`-th case of `family` for `seed`: depends on nothing else, so it replays alone."""
    rng = random.Random(f"{family}:{seed}:{index}")  # noqa: S311  # reproducible on purpose, not secret
    spec = FAMILIES[family](rng, target)
    headers = tuple((k, v if all(ord(c) < 256 for c in v) else header_text(v)) for k, v in spec.pop("headers").items())
    return Case(family=family, seed=seed, index=index, headers=headers, **spec)


def cases(families: list[str], seed: int, count: int, target: Target) -> Iterator[Case]:
    """`count` cases, taking the families in turn."""
    for index in range(count):
        yield case(families[index % len(families)], seed, index, target)

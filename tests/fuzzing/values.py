"""Hostile values: strings with lone surrogates, NUL, bidi and astral text, odd scalars, deep nesting."""

import json
import random
from typing import Any
from urllib.parse import quote

from tests.conftest import AGENT_TOKEN
from tests.fuzzing.case import APPROVER_TOKEN

PIECES = [
    "\ud800",  # lone high surrogate (sent as the JSON escape "\ud800")
    "\udfff",  # lone low surrogate
    "\udbff\udc00",  # a valid pair, U+10FC00
    "\u0000",
    "\u202e",  # RIGHT-TO-LEFT OVERRIDE
    "\u200f\u200e",
    "\u2066abc\u2069",
    "مرحبا بالعالم",
    "שלום",
    "🔥",
    "👩‍👩‍👧‍👦",
    "\U0001f600",
    "\U00010000",
    "\U0010ffff",
    "\ufeff",
    "\ufffe\uffff",
    "e\u0301\u0301\u0301",
    "\r\n",
    "\t",
    "\x7f\x1b[31m",
    "</script><script>alert(1)</script>",
    "'; DROP TABLE audit_events; --",
    "../../etc/passwd",
    "%00%ff",
    "${ALPHA_TOKEN}",
    "{{7*7}}",
    "echo",
    "delete_record",
    "",
    " ",
]
HUGE = [1_000, 10_000, 70_000, 200_000]


def weird_string(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        piece = rng.choice(PIECES) or "x"
        return piece * (rng.choice(HUGE) // len(piece))
    if roll < 0.1:
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(1, 40)))
    return "".join(rng.choice(PIECES) for _ in range(rng.randrange(1, 5)))


def scalar(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            1,
            2**31,
            2**63,
            -(2**63) - 1,
            2**64 + 1,
            10**30,
            0.5,
            -0.0,
            1e308,
            5e-324,
            "",
            "0",
            "1",
            "null",
            "2.0",
            weird_string(rng),
            weird_string(rng),
        ]
    )


def value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.55:
        return scalar(rng)
    if roll < 0.75:
        return [value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {key(rng): value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def key(rng: random.Random) -> str:
    return rng.choice(["text", "a", "b", "record_id", "name", "steps", "_meta", "", "__proto__", weird_string(rng)])


def any_id(rng: random.Random) -> Any:
    """A JSON-RPC id of every type: the valid string and integer kinds, and everything the spec forbids."""
    return rng.choice(
        [1, 0, -1, 2**53, 2**64, 1.5, "1", "", "abc", weird_string(rng), None, True, [], [1], {}, {"id": 1}]
    )


def encode(rng: random.Random, message: Any) -> bytes:
    """JSON text: escaped ASCII (lone surrogates as "\\ud800"), or raw UTF-8 (lone surrogates as invalid bytes)."""
    if rng.random() < 0.7:
        return json.dumps(message, ensure_ascii=True).encode()
    return json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")


def nested(rng: random.Random, depth: int) -> str:
    """JSON text nested `depth` deep, built by hand (json.dumps would hit the recursion limit first)."""
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def pct(text: str) -> str:
    """`text` percent-encoded for a URL path, lone surrogates as their (invalid) UTF-8 bytes."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def header_text(text: str) -> str:
    """`text` as a header value: its UTF-8 bytes as latin-1 characters, minus what HTTP/1.1 cannot carry."""
    raw = text.encode("utf-8", "surrogatepass")
    return bytes(b for b in raw if b not in b"\r\n\x00").decode("latin-1")


def api_headers(rng: random.Random) -> dict[str, str]:
    token = rng.choice(
        [APPROVER_TOKEN] * 5
        + ["bob-approver-token", "carol-approver-token", AGENT_TOKEN, "", "nope", header_text(weird_string(rng))]
    )
    headers = {"Authorization": rng.choice(["Bearer ", "bearer ", "Basic ", ""]) + token}
    if rng.random() < 0.8:
        headers["Content-Type"] = rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded"])
    return headers

"""The rules that place a shared stdio child's messages: levels, attribution, who may be asked what."""

import pytest

from integrations.gateway.multiplex import (
    level_allows,
    modern_levels,
    most_verbose,
    refusal,
    the_one,
)


@pytest.mark.parametrize(
    ("threshold", "level", "allowed"),
    [
        (None, "debug", True),
        (None, "made-up", True),
        ("error", "error", True),
        ("error", "critical", True),
        ("error", "warning", False),
        ("error", "made-up", False),
    ],
)
def test_a_level_passes_a_threshold_at_or_below_it(threshold: str | None, level: str, allowed: bool) -> None:
    assert level_allows(threshold, level) is allowed


def test_the_child_logs_at_the_most_verbose_level_any_session_asked_for() -> None:
    assert most_verbose(["error", None, "info", "warning"]) == "info"
    assert most_verbose([None, None]) is None


def test_a_2026_request_hears_only_the_levels_it_opted_in_to() -> None:
    key = "io.modelcontextprotocol/logLevel"
    assert modern_levels({key: "critical"}, key) == {"critical", "alert", "emergency"}
    assert modern_levels({}, key) == frozenset()
    assert modern_levels({key: "loud"}, key) == frozenset()


def test_a_message_is_attributed_only_when_one_session_has_requests_in_flight() -> None:
    assert the_one(["a", "a", None]) == ("a", True)
    assert the_one(["a", "b"]) == (None, True)  # ambiguous: sent to nobody
    assert the_one([None]) == (None, False)  # idle (signoff's own requests belong to no session)


@pytest.mark.parametrize(
    ("capabilities", "params", "refused"),
    [
        ({"elicitation": {}}, {"mode": "form"}, False),  # {} is form (2025-06-18)
        ({"elicitation": {"form": {}}}, {}, False),
        ({"elicitation": {"url": {}}}, {}, True),
        ({"elicitation": {"form": {}}}, {"mode": "url"}, True),
        ({"elicitation": {"url": {}}}, {"mode": "url"}, False),
        ({"sampling": {}}, {}, True),
    ],
)
def test_elicitation_goes_only_to_a_client_that_declared_its_mode(
    capabilities: dict[str, object], params: dict[str, object], refused: bool
) -> None:
    assert (refusal(capabilities, {"method": "elicitation/create", "params": params}) is not None) is refused


def test_sampling_goes_only_to_a_client_that_declared_it() -> None:
    ask = {"method": "sampling/createMessage", "params": {}}
    assert refusal({"sampling": {}}, ask) is None
    assert refusal({"elicitation": {}}, ask) is not None
    assert refusal({}, ask) is not None

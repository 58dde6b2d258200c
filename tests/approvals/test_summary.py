"""The one-line summary of a call's arguments: what it says, in what order, and that no argument can break it."""

from datetime import UTC, datetime, timedelta

import pytest

from approvals.audit import redacted
from approvals.summary import MAX_SUMMARY, ago, arguments_summary, one_line


def test_short_scalar_arguments_come_first_and_long_ones_say_what_they_are() -> None:
    config = {"path": "/srv/config.yaml", "content": "port: 8080\n" * 200}
    query = {"sql": "SELECT * FROM users WHERE id = 1 AND name = 'bob' ORDER BY x", "db": "prod", "limit": 3}

    assert arguments_summary(config) == "path=/srv/config.yaml content=<200 lines>"
    assert arguments_summary(query) == 'db=prod limit=3 sql="SELECT * FROM users WHERE id …" (60 chars)'
    assert arguments_summary({"tags": ["a", "b"], "dry_run": True, "opts": {"x": 1}}) == (
        'dry_run=true opts={x=1} tags=["a", "b"]'
    )
    assert arguments_summary({"ids": list(range(1000))}) == "ids=[1,000 items]"
    assert arguments_summary({}) == "(no arguments)"


def test_a_redacted_value_stays_hidden_in_the_summary() -> None:
    arguments = {"user": "bob", "password": "hunter2"}

    line = arguments_summary(redacted(arguments, ["password"]))

    assert line == "password=[redacted] user=bob" and "hunter2" not in line


@pytest.mark.parametrize(
    ("hostile", "shown"),
    [
        ("a\x00b", "a\\x00b"),  # NUL
        ("\x1b[2Jcleared", "\\x1b[2Jcleared"),  # a terminal escape
        ("safe\u202eexe.txt", "safe\\u202eexe.txt"),  # a bidi override that would reverse what follows
        ("\ud800", "\\ud800"),  # a lone surrogate
        ("one\rtwo", "one\\x0dtwo"),
    ],
)
def test_control_format_and_surrogate_characters_are_shown_as_escapes(hostile: str, shown: str) -> None:
    line = arguments_summary({"name": hostile, f"k{hostile}": 1})

    assert shown in line
    assert all(c.isprintable() for c in line)


def test_the_line_is_bounded_however_many_or_large_the_arguments() -> None:
    many = arguments_summary({f"key{i:03}": i for i in range(500)})
    huge = arguments_summary({"blob": "x" * 5_000_000, "nested": [[[[["deep"]]]]] * 10_000})
    long_key = arguments_summary({"k" * 10_000: "v"})

    assert len(many) <= MAX_SUMMARY and many.endswith("more)")
    assert huge == 'blob="xxxxxxxxxxxxxxxxxxxxxxxxxxxxx…" (5,000,000 chars) nested=[10,000 items]'
    assert len(long_key) <= MAX_SUMMARY
    assert len(arguments_summary({"a": "b" * 40, "c": "d" * 40}, most=30)) <= 30


def test_a_description_is_one_clean_line() -> None:
    assert one_line("Deletes  a\n\trecord.\u202e\n", 80) == "Deletes a record.\\u202e"
    assert one_line("word " * 1000, 40) == ("word " * 8).strip()[:39] + "…"
    assert one_line(None) == ""


def test_age_reads_as_people_say_it() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

    assert [ago(now - timedelta(seconds=s), now) for s in (3, 42, 180, 3900, 7200, 86400 * 3)] == [
        "just now",
        "42 s ago",
        "3 min ago",
        "1 h 5 min ago",
        "2 h ago",
        "3 days ago",
    ]

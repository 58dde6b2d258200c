"""`signoff approvals list` as a table: what each call does first (its one-line summary), then who asked and when.

Text for a terminal, so everything the agent controls is on one line with its control characters shown as escapes
(`approvals.summary`): an argument cannot move the cursor, clear the screen or fake another row.
"""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from approvals.summary import ago, clean, one_line

__all__ = ["approval_table"]


def approval_table(views: Sequence[Mapping[str, Any]], now: datetime) -> str:
    """The requests (their public views) as the table prints them: one line of what and who, then an indented
    line of why (the rule's reason, the deadline, the tool's own description)."""
    lines = []
    for view in views:
        asked = ago(datetime.fromisoformat(view["requested_at"]), now)
        call = clean(f"{view['server']}/{view['tool']}", 120)
        lines.append(
            f"{view['id']}  {view['status']:<9} {call}  by {clean(view['agent'], 80)}  {asked}  {view['summary']}"
        )
        why = [f"deadline {view['deadline']}"]
        if view.get("reason"):
            why.append(one_line(view["reason"], 120))
        if view.get("tool_description"):
            why.append("tool: " + one_line(view["tool_description"], 120))
        lines.append("    " + " · ".join(why))
    return "".join(line + "\n" for line in lines)

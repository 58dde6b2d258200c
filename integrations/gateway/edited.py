"""A held call approved with edits: the call as it runs (the edited arguments in the original request), and the
note its result carries, so the agent knows the call did not run as it asked.

The original request's bytes are re-sent with `params.arguments` replaced; nothing else in it changes. The note
is a text block first in the result's content, and `_meta["signoff/decision"]` with the edited arguments (redacted
as the rule says), both digests and the diff.
"""

import json
from dataclasses import replace
from typing import Any

from approvals.audit import digest_arguments, redacted
from approvals.edits import arguments_diff, changes_text
from approvals.service import Standing
from integrations.gateway.forwarding import Outbound
from integrations.gateway.refusals import META_KEY
from integrations.gateway.revisions import PARAM_HEADER_PREFIX
from integrations.gateway.wire import Message

__all__ = ["Edit", "edit_of"]


class Edit:
    """What an approval with edits changes about one held call: what is sent, and what the agent reads."""

    def __init__(self, outbound: Outbound, standing: Standing, edited: str) -> None:
        message = json.loads(outbound.body)
        self.original: dict[str, Any] = message["params"].get("arguments") or {}
        self.arguments: dict[str, Any] = json.loads(edited)
        self.by = standing.approved_by or "an approver"
        self.redact: list[str] = json.loads(standing.redact)
        message["params"]["arguments"] = self.arguments
        # Mcp-Param-* headers mirror the original arguments; a 2026-07-28 server would find them disagreeing.
        headers = {k: v for k, v in outbound.headers.items() if not k.startswith(PARAM_HEADER_PREFIX)}
        self.outbound = replace(
            outbound, body=json.dumps(message, separators=(",", ":")).encode(), headers=headers, message=message
        )

    def note(self, response: Message) -> Message | None:
        """The upstream's response with the note of the edit added to its result (an error passes unchanged)."""
        result = response.get("result")
        if not isinstance(result, dict):
            return None
        diff = arguments_diff(self.original, self.arguments, self.redact)
        text = f"signoff: approved by {self.by} with arguments changed: {changes_text(diff)}"
        decision = {
            "outcome": "approved_with_edits",
            "approved_by": self.by,
            "arguments": redacted(self.arguments, self.redact),
            "original_digest": digest_arguments(self.original),
            "edited_digest": digest_arguments(self.arguments),
            "changes": diff,
        }
        content = result.get("content")
        meta: dict[str, Any] = result["_meta"] if isinstance(result.get("_meta"), dict) else {}
        noted = {
            **result,
            "content": [{"type": "text", "text": text}, *(content if isinstance(content, list) else [])],
            "_meta": {**meta, META_KEY: decision},
        }
        return {**response, "result": noted}


def edit_of(outbound: Outbound, standing: Standing | None) -> Edit | None:
    """The edit a claimed request carries, or None when it runs as requested."""
    if standing is None or standing.edited_arguments is None:
        return None
    return Edit(outbound, standing, standing.edited_arguments)

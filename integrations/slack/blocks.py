"""Block Kit for approval requests: the channel message in each state, and the note and reason modals.

Pure functions from a request (as the API shows it) to Slack's JSON: no I/O, no Slack client. Everything
an agent controls (tool names, arguments, reasons) is escaped, so a crafted argument cannot ping the
channel (`<!channel>`) or break out of its code block.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from approvals.reasons import MAX_REASON
from approvals.summary import one_line, ordered_arguments

__all__ = [
    "APPROVE",
    "APPROVE_NOTE",
    "ARGUMENTS_ACTION",
    "ARGUMENTS_BLOCK",
    "EDIT",
    "EDIT_VIEW",
    "NOTE_VIEW",
    "REASON_ACTION",
    "REASON_BLOCK",
    "REJECT",
    "REJECT_VIEW",
    "Card",
    "Message",
    "check_message",
    "edit_modal",
    "mention",
    "note_modal",
    "notice_message",
    "reject_modal",
    "request_message",
]

APPROVE = "signoff_approve"
APPROVE_NOTE = "signoff_approve_note"
REJECT = "signoff_reject"
EDIT = "signoff_edit"
EDIT_VIEW = "signoff_edit_view"
ARGUMENTS_BLOCK = "signoff_arguments"
ARGUMENTS_ACTION = "signoff_arguments_input"
MAX_INPUT = 3000  # Slack's most for a plain_text_input
NOTE_VIEW = "signoff_approve_note_view"
REJECT_VIEW = "signoff_reject_view"
REASON_BLOCK = "signoff_reason"
REASON_ACTION = "signoff_reason_input"

MAX_ARGUMENTS = 1200  # characters of pretty JSON shown; Slack's limit for a section is 3000
MAX_ARGUMENT_LINES = 30
MAX_TEXT = 2800

Block = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Vote:
    approver: str
    verdict: str
    comment: str


@dataclass(frozen=True, slots=True)
class Card:
    """What the message shows of one request; decoded from the request's public JSON by `from_view`."""

    id: str
    status: str
    server: str
    tool: str
    agent: str
    arguments: Any
    rule: str
    reason: str
    approvers: tuple[str, ...]
    quorum: int
    deadline: datetime
    url: str
    responded_by: str | None = None
    responded_at: datetime | None = None
    comment: str | None = None
    outcome: str | None = None
    risk: str | None = None
    votes: tuple[Vote, ...] = ()
    # quorum.any_of as (count, approvers, approved by); one entry for a plain quorum.
    thresholds: tuple[tuple[int, tuple[str, ...], tuple[str, ...]], ...] = ()
    mentions: Mapping[str, str] = field(default_factory=dict)  # approver or group:NAME -> <@U…> / <!subteam^S…>
    editable: bool = False  # the rule allows edits: the message offers "Edit and approve…"
    summary: str = ""  # the one-line summary of the (redacted) arguments (approvals.summary)
    tool_description: str = ""  # what the tool itself says it does (the upstream's tools/list)
    requested_at: datetime | None = None
    agent_waiting: bool = False  # a call is held open on the request: an approval runs it at once
    use_by: datetime | None = None  # an approval unused by then expires

    @classmethod
    def from_view(cls, view: Mapping[str, Any], mentions: Mapping[str, str] | None = None) -> "Card":
        """The card of a request's public JSON; `mentions` maps approvers and groups to their Slack mentions."""
        responded = view.get("responded_at")
        requested, use_by = view.get("requested_at"), view.get("use_by")
        return cls(
            id=str(view["id"]),
            status=str(view["status"]),
            server=str(view["server"]),
            tool=str(view["tool"]),
            agent=str(view["agent"]),
            arguments=view.get("arguments"),
            rule=str(view.get("rule") or ""),
            reason=str(view.get("reason") or ""),
            approvers=tuple(str(a) for a in view.get("approvers") or ()),
            quorum=int(view.get("quorum") or 1),
            deadline=datetime.fromisoformat(str(view["deadline"])),
            url=str(view.get("url") or ""),
            responded_by=view.get("responded_by"),
            responded_at=datetime.fromisoformat(responded) if responded else None,
            comment=view.get("comment"),
            outcome=view.get("outcome"),
            risk=view.get("risk"),
            votes=tuple(
                Vote(str(d["approver"]), str(d["verdict"]), str(d.get("comment") or ""))
                for d in view.get("decisions") or ()
            ),
            thresholds=tuple(
                (int(t["count"]), tuple(t["approvers"]), tuple(t["approved_by"]))
                for t in (view.get("thresholds") or {}).get("any_of") or ()
            ),
            mentions=dict(mentions or {}),
            editable=bool(view.get("allow_edits")),
            summary=str(view.get("summary") or ""),
            tool_description=str(view.get("tool_description") or ""),
            requested_at=datetime.fromisoformat(requested) if requested else None,
            agent_waiting=bool(view.get("agent_waiting")),
            use_by=datetime.fromisoformat(use_by) if use_by else None,
        )

    @property
    def approvals(self) -> tuple[Vote, ...]:
        return tuple(v for v in self.votes if v.verdict == "approve")


@dataclass(frozen=True, slots=True)
class Message:
    """A chat.postMessage / chat.update body: `text` is the notification and screen-reader fallback."""

    text: str
    blocks: list[Block]


def escape(text: str) -> str:
    """Slack's mrkdwn escaping (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _plain(text: str, most: int = 150) -> Block:
    return {"type": "plain_text", "text": _clip(text, most), "emoji": True}


def _mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": _clip(text, MAX_TEXT)}


def _section(text: str) -> Block:
    return {"type": "section", "text": _mrkdwn(text)}


def _date(moment: datetime) -> str:
    # Shown in each reader's own time zone; the fallback is for clients that cannot format dates.
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} at {{time}}|{fallback}>"


def _ago(moment: datetime) -> str:
    # Slack writes "3 minutes ago" in each reader's client, kept current; the fallback is the time itself.
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{ago}}|{fallback}>"


def _quote(text: str) -> str:
    return "\n".join("> " + line for line in escape(text).splitlines() or [""])


def _ordered(arguments: Any) -> Any:
    """The arguments with the short ones first, as every view lists them: what is cut is the long tail."""
    if not isinstance(arguments, Mapping):
        return arguments
    return {name: value for name, value, _short in ordered_arguments(arguments)}


def _arguments(card: Card) -> tuple[str, bool]:
    """The arguments' section text, and whether they had to be cut to fit."""
    pretty = json.dumps(_ordered(card.arguments), indent=2, ensure_ascii=False)
    # A run of three backticks would end the code block early.
    pretty = escape(pretty).replace("```", "`\u200b``")
    lines = pretty.splitlines()
    truncated = len(pretty) > MAX_ARGUMENTS or len(lines) > MAX_ARGUMENT_LINES
    if truncated:
        pretty = "\n".join(lines[:MAX_ARGUMENT_LINES])[:MAX_ARGUMENTS] + "\n…"
    text = f"*Arguments*\n```{pretty}```"
    if truncated:
        text += f"\n_Truncated: <{card.url}|see all arguments on the web page>._" if card.url else "\n_Truncated._"
    return text, truncated


def _code(text: str) -> str:
    """`text` as inline code: escaped, and with no backtick to end the code early."""
    return "`" + escape(text).replace("`", "'") + "`"


def _cut_warning(card: Card) -> Block:
    """The dialog Approve opens when the message could not show every argument: one tap must not approve what
    nobody saw (https://api.slack.com/reference/block-kit/composition-objects#confirm)."""
    where = f" Read them all on the web page first: {card.url}" if card.url else ""
    return {
        "title": _plain("Arguments were cut", 100),
        "text": _plain("This message shows only part of the call's arguments." + where, 300),
        "confirm": _plain("Approve anyway", 30),
        "deny": _plain("Cancel", 30),
        "style": "primary",
    }


def mention(card: Card, approver: str) -> str:
    """`approver` (a name or `group:NAME`) as Slack mentions it when it is mapped, so they get a push; else text."""
    return card.mentions.get(approver) or escape(approver)


def _who_may_decide(card: Card) -> str:
    who = ", ".join(mention(card, a) for a in card.approvers) if card.approvers else "any approver"
    if len(card.thresholds) > 1:
        return f"{who} · needs any of:\n" + "\n".join(_threshold(card, t) for t in card.thresholds)
    need = f"{card.quorum} approvals" if card.quorum > 1 else "1 approval"
    return f"{who} · needs {need}"


def _threshold(card: Card, entry: tuple[int, tuple[str, ...], tuple[str, ...]]) -> str:
    count, approvers, approved_by = entry
    by = f" ({', '.join(escape(a) for a in approved_by)})" if approved_by else ""
    done = " :white_check_mark:" if len(approved_by) >= count else ""
    return f"• {len(approved_by)} of {count} from {', '.join(escape(a) for a in approvers)}{by}{done}"


def _progress(card: Card) -> str:
    names = ", ".join(escape(v.approver) for v in card.approvals)
    return f":ballot_box_with_check: *{len(card.approvals)} of {card.quorum} approvals*" + (
        f" ({names})" if names else ""
    )


def _decided(card: Card, verb: str) -> str:
    line = f"*{verb}* by {escape(card.responded_by or 'someone')}"
    if card.responded_at is not None:
        line += f" · {_date(card.responded_at)}"
    if card.comment:
        line += "\n" + _quote(card.comment)
    return line


def _state(card: Card) -> tuple[str, str, str]:
    """The header, the status section and the notification text for the request's state."""
    call = f"{card.agent}'s {card.server}/{card.tool}"
    status = card.status
    if status == "pending":
        text = f"Approval needed: {card.agent} wants to run {card.server}/{card.tool}"
        if card.summary:
            text += f": {escape(_clip(card.summary, 120))}"
        pinged = [card.mentions[a] for a in card.approvers if a in card.mentions]
        if pinged:  # the notification text is what pushes: the mentions go in it too
            text += " · " + " ".join(pinged)
        line = f":hourglass_flowing_sand: Waiting for a decision · deadline {_date(card.deadline)}"
        if len(card.thresholds) > 1:
            line += "\n" + "\n".join(_threshold(card, t) for t in card.thresholds)
        elif card.quorum > 1:
            line += "\n" + _progress(card)
        return "Approval needed", line, text
    if status in ("approved", "executing", "executed", "failed"):
        line = ":white_check_mark: " + _decided(card, "Approved")
        if card.quorum > 1:
            line += "\n" + _progress(card)
        if status == "executed":
            line += f"\n:arrow_forward: The call ran upstream: {escape(card.outcome or 'ok')}"
        elif status == "failed":
            line += f"\n:warning: The call failed upstream: {escape(card.outcome or 'error')}"
        elif status == "executing" or card.agent_waiting:
            line += "\n:arrow_forward: The agent is waiting; it runs now."
        else:
            until = f" (until {_date(card.use_by)})" if card.use_by is not None else ""
            line += f"\n:arrows_counterclockwise: The agent was told to retry; it runs when it calls again{until}."
        header = {"executed": "Approved and run", "failed": "Approved, failed upstream"}.get(status, "Approved")
        return header, line, f"{header} ({card.responded_by}): {call}"
    if status == "rejected":
        return "Rejected", ":no_entry: " + _decided(card, "Rejected"), f"Rejected by {card.responded_by}: {call}"
    if status == "expired" and card.outcome == "approval_unused":
        line = f":alarm_clock: *Expired*: {_decided(card, 'Approved')}, but no call used the approval in time."
        return "Expired", line, f"Expired unused: {call}"
    if status == "expired":
        line = f":alarm_clock: *Expired*: nobody decided by {_date(card.deadline)}, so the call was refused."
        return "Expired", line, f"Expired: {call}"
    if status == "cancelled":
        why = escape(card.comment or "the agent cancelled the call")
        return "Withdrawn", f":leftwards_arrow_with_hook: *Withdrawn*: {why}.", f"Withdrawn: {call}"
    return status.capitalize(), f"*{escape(status)}*", f"{status}: {call}"


def _buttons(card: Card, cut: bool = False) -> Block:
    approve: Block = {"type": "button", "action_id": APPROVE, "value": card.id, "style": "primary"}
    approve["text"] = _plain("Approve (arguments cut)…" if cut else "Approve")
    if cut:
        approve["confirm"] = _cut_warning(card)
    elements: list[Block] = [
        approve,
        {"type": "button", "action_id": APPROVE_NOTE, "value": card.id, "text": _plain("Approve with note…")},
        {"type": "button", "action_id": REJECT, "value": card.id, "style": "danger", "text": _plain("Reject…")},
    ]
    if card.editable:
        elements.insert(2, {"type": "button", "action_id": EDIT, "value": card.id, "text": _plain("Edit and approve…")})
    if card.url:
        elements.append({"type": "button", "action_id": "signoff_open", "url": card.url, "text": _plain("Open")})
    return {"type": "actions", "block_id": f"signoff_decide_{card.id}", "elements": elements}


def request_message(card: Card) -> Message:
    """The channel message for `card` in its current state; buttons only while it is pending."""
    header, status_line, text = _state(card)
    facts = [
        f"*Agent*\n{escape(card.agent)}",
        f"*Server*\n{escape(card.server)}",
        f"*Tool*\n`{escape(card.tool)}`",
        f"*Approvers*\n{_who_may_decide(card)}",
    ]
    if card.risk:
        facts.append(f"*Risk*\n{escape(card.risk)}")
    why = escape(card.reason) if card.reason else "_The policy gave no reason._"
    if card.rule:
        why += f"\n_Rule: {escape(card.rule)}_"
    if card.tool_description:
        why += f"\n*The tool says:* {escape(one_line(card.tool_description, 300))}"
    arguments, cut = _arguments(card)
    what = f"*What:* {_code(card.summary)}" if card.summary else "*What:* the call below"
    if card.requested_at is not None:
        what += f"\n_Asked by {escape(card.agent)} {_ago(card.requested_at)}_"
    blocks: list[Block] = [
        {"type": "header", "text": _plain(f"{header}: {card.tool}")},
        _section(what),
        {"type": "section", "fields": [_mrkdwn(f) for f in facts]},
        _section(f"*Why it needs approval*\n{why}"),
        _section(arguments),
        _section(status_line),
    ]
    if card.status == "pending":
        blocks.append(_buttons(card, cut))
    context = f"Request `{card.id}`"
    if card.url:
        context += f" · <{card.url}|web page>"
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})
    return Message(text=_clip(text, 3000), blocks=blocks)


def notice_message(card: Card, kind: str, approvers: tuple[str, ...]) -> Message:
    """The note an escalation (`kind` "escalated") or a reminder posts: who may now decide, mentioned, and where."""
    who = " ".join(mention(card, a) for a in approvers) or "Approvers"
    link = f" <{card.url}|Open the request>." if card.url else ""
    call = f"{escape(card.agent)}'s `{escape(card.server)}/{escape(card.tool)}`"
    if kind == "escalated":
        text = f":rotating_light: Escalated to {who}: you may now decide on {call}. Deadline {_date(card.deadline)}."
    else:
        text = f":bell: Reminder for {who}: {call} is still waiting for a decision. Deadline {_date(card.deadline)}."
    return Message(text=_clip(text + link, 3000), blocks=[_section(text + link)])


def _modal(card: Card, callback_id: str, title: str, submit: str, label: str, optional: bool, meta: str) -> Block:
    summary = f"*{escape(card.agent)}* wants to run `{escape(card.tool)}` on *{escape(card.server)}*."
    return {
        "type": "modal",
        "callback_id": callback_id,
        "private_metadata": meta,
        "title": _plain(title, 24),
        "submit": _plain(submit, 24),
        "close": _plain("Cancel", 24),
        "blocks": [
            _section(summary),
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "optional": optional,
                "label": _plain(label, 2000),
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_ACTION,
                    "multiline": True,
                    "max_length": MAX_REASON,
                },
            },
        ],
    }


def reject_modal(card: Card, channel: str) -> Block:
    """The modal Reject opens: a reason is required, since the agent and the audit log show it."""
    meta = json.dumps({"id": card.id, "channel": channel})
    label = "Why? The agent reads this, and the audit log keeps it."
    return _modal(card, REJECT_VIEW, "Reject the call", "Reject", label, optional=False, meta=meta)


def note_modal(card: Card, channel: str) -> Block:
    """The modal "Approve with note…" opens: the note is optional and lands in the audit log."""
    meta = json.dumps({"id": card.id, "channel": channel})
    label = "Note (optional): a ticket, a reason, a condition"
    view = _modal(card, NOTE_VIEW, "Approve the call", "Approve", label, optional=True, meta=meta)
    if _arguments(card)[1]:  # the message cut the arguments: say so before anyone approves them
        link = f" <{card.url}|Read them all on the web page> first." if card.url else ""
        view["blocks"].insert(1, _section(f":warning: *The message showed only part of the arguments.*{link}"))
    return view


def edit_arguments(card: Card) -> str:
    """The arguments as the edit modal holds them: pretty JSON, redacted values as "[redacted]"."""
    return json.dumps(card.arguments, indent=2, ensure_ascii=False)


def edit_modal(card: Card, channel: str) -> Block:
    """The modal "Edit and approve…" opens: the arguments as JSON to change, and an optional note."""
    meta = json.dumps({"id": card.id, "channel": channel})
    label = "Note (optional): why the arguments changed"
    view = _modal(card, EDIT_VIEW, "Edit and approve", "Approve", label, optional=True, meta=meta)
    arguments = {
        "type": "input",
        "block_id": ARGUMENTS_BLOCK,
        "label": _plain("Arguments (JSON); checked against the same policy before the call runs", 2000),
        "hint": _plain('Leave "[redacted]" where it is to keep a hidden value.', 2000),
        "element": {
            "type": "plain_text_input",
            "action_id": ARGUMENTS_ACTION,
            "multiline": True,
            "max_length": MAX_INPUT,
            "initial_value": edit_arguments(card),
        },
    }
    view["blocks"].insert(1, arguments)
    return view


def check_message(team: str, bot: str) -> Message:
    """What `signoff slack test` posts."""
    text = f"signoff can post here: connected to {team} as @{bot}. Approval requests will appear in this channel."
    return Message(text=text, blocks=[_section(":white_check_mark: " + escape(text))])

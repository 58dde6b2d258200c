"""What an agent reads when signoff says no: a `tools/call` result with `isError`, text and `_meta`.

A refusal is an answer the model can read and adapt to, not a transport failure (ARCHITECTURE.md). Each result
here is built once, then shaped for the client's revision by `for_revision`, so none reaches a 2026-07-28
client without the fields that revision requires.
"""

from typing import Any, assert_never

from mcp_types import SERVER_INFO_META_KEY

from integrations.gateway.wire import is_modern
from policies import Allow, Decision, Deny, Hidden, NeedsApproval, RateLimited

META_KEY = "signoff/decision"
IMPLEMENTATION = {"name": "signoff", "version": "0.1.0"}  # who made a result the upstream never saw


def for_revision(result: dict[str, Any], version: str | None) -> dict[str, Any]:
    """`result` as a client speaking `version` (its `MCP-Protocol-Version`; None before one is known) must read it.

    The 2026-07-28 revision requires `resultType` on every result (the SDK's `Client` refuses a result
    without it), and servers should name themselves in `_meta` on every response: signoff made this one.
    The handshake revisions know neither field, so their results are left as they are.
    """
    if not is_modern(version):
        return result
    meta = {SERVER_INFO_META_KEY: IMPLEMENTATION, **(result.get("_meta") or {})}
    return {"resultType": "complete", **result, "_meta": meta}


def _result(text: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": True, "_meta": {META_KEY: data}}


def refusal(decision: Decision, tool: str, policy_version: str) -> dict[str, Any]:
    """The `tools/call` result for a decision other than `Allow`."""
    data: dict[str, Any] = {"tool": tool, "rule": decision.rule, "policy_version": policy_version}
    where = f"(rule {decision.rule}, policy {policy_version})"
    match decision:
        case Deny(reason=reason):
            data |= {"outcome": "denied", "reason": reason}
            return _result(f'signoff denied this call to "{tool}": {reason} {where}', data)
        case Hidden():
            data |= {"outcome": "hidden", "reason": "hidden by policy"}
            return _result(
                f'signoff denied this call: there is no tool "{tool}" available through this gateway {where}', data
            )
        case RateLimited(reason=reason, counter=counter, retry_after=retry_after):
            data |= {
                "outcome": "rate_limited",
                "reason": reason,
                "counter": counter,
                "retry_after": round(retry_after, 3),
            }
            return _result(f'signoff rate-limited this call to "{tool}": {reason} {where}', data)
        case NeedsApproval(reason=reason):
            data |= {"outcome": "approval_unavailable", "reason": reason}
            return _result(
                f'signoff refused this call to "{tool}": it requires human approval ({reason}), and approval is not '
                f"configured on this gateway, so the call was not forwarded {where}",
                data,
            )
        case Allow():
            raise ValueError("an allowed call is forwarded, not refused")
        case _:
            assert_never(decision)


def upstream_failure(server: str, tool: str, detail: str, *, reached: bool = True) -> dict[str, Any]:
    """The `tools/call` result when the upstream did not answer the call with a usable response.

    `detail` names the server and what went wrong. `reached` False: the call never got to the server
    (it could not be reached), so it did not run; otherwise it may have run there.
    """
    if not reached:
        data = {"tool": tool, "outcome": "upstream_unavailable", "reason": detail, "server": server}
        return _result(f'signoff could not run "{tool}": {detail}. The call was not run; it may be retried.', data)
    data = {"tool": tool, "outcome": "upstream_failure", "reason": detail, "server": server}
    return _result(
        f'signoff did not get an answer to this call to "{tool}": {detail}. The call may have run on the server; '
        "check before retrying anything that is not safe to repeat.",
        data,
    )


def approval_outcome(
    view: dict[str, Any], link: str, *, used: bool = False, ran_before: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The `tools/call` result for a held call that will not run now: pending, rejected, expired, withdrawn, used.

    `ran_before`: the latest run of this exact call (approval_id, status, outcome, finished_at), named in a pending
    answer, so an agent that never read that run's result does not take "pending" for "it never ran".
    """
    tool, status, approval_id = view["tool"], view["status"], view["id"]
    data: dict[str, Any] = {
        "tool": tool,
        "rule": view["rule"],
        "policy_version": view["policy_version"],
        "approval_id": approval_id,
        "approval_url": link,
        "status": status,
        "deadline": view["deadline"],
    }
    if status == "failed" and view.get("outcome") == "gateway_stopped":
        data["outcome"] = "gateway_stopped"
        text = (
            f'the approved call to "{tool}" ({approval_id}) was running when signoff stopped, so whether it took '
            "effect is unknown. It will not be run again: check the target, then call again later to ask anew."
        )
    elif used:
        data["outcome"] = "approval_used"
        text = (
            f'the approval {approval_id} for this call to "{tool}" was already used by an earlier call; an approval '
            "lets one call through. Call again to ask for a new approval."
        )
    elif status == "pending":
        data |= {"outcome": "approval_pending", "reason": view["reason"]}
        ran = "Nothing has run."
        if ran_before is not None:
            data["ran_before"] = ran_before
            when, earlier = ran_before["finished_at"], ran_before["approval_id"]
            if ran_before["status"] == "executed":
                ran = f"this exact call already ran at {when} (approval {earlier}): approving it would run it again."
            else:  # failed: sent upstream and failed there, or never reached it (the outcome says which)
                ran = (
                    f"this exact call was already approved (approval {earlier}) and failed at {when} "
                    f"({ran_before['outcome']}): approving it would try the call again."
                )
            ran = f"Nothing has run for this request, but {ran}"
        text = (
            f'this call to "{tool}" is waiting for a person to approve it ({view["reason"]}). Approval request '
            f"{approval_id}: {link}. {ran} Call again with the same arguments to get the outcome; "
            f"the request expires at {view['deadline']}."
        )
    elif status == "rejected":
        data |= {"outcome": "rejected", "rejected_by": view["responded_by"], "comment": view["comment"]}
        why = view["comment"] or "no reason given"
        text = f'{view["responded_by"]} rejected this call to "{tool}": {why}. It was not run.'
    elif status == "expired" and view.get("outcome") == "approval_unused":
        data |= {"outcome": "approval_unused", "approved_by": view["responded_by"], "use_by": view.get("use_by")}
        text = (
            f'{view["responded_by"]} approved this call to "{tool}", but no call used the approval by '
            f"{view.get('use_by')}, so it expired and the call was not run. Call again to ask for a new approval."
        )
    elif status == "expired":
        data["outcome"] = "expired"
        text = f'nobody approved this call to "{tool}" before its deadline ({view["deadline"]}), so it was not run.'
    elif status == "cancelled" and view.get("outcome") == "policy_changed":
        data |= {"outcome": "policy_changed", "reason": view["comment"]}
        text = (
            f'the approval request for this call to "{tool}" was withdrawn because {view["comment"]}. It was not '
            "run, and an approval given under the earlier policy will not run it."
        )
    else:
        data["outcome"] = status
        text = f'the approval request for this call to "{tool}" was {status}, so it was not run.'
    return _result(f"signoff: {text} (rule {view['rule']}, approval {approval_id})", data)

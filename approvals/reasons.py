"""What an approver may write as the reason for a decision or a revocation: one rule for every channel.

The API, the web page, Slack and the CLI all decide through `service.decide` (and revoke through
`grants.revoke_grant`), which refuse a reason this module finds a problem with; the adapters call
`reason_problem` first only to say so in their own words. A reason is free text, shown to the agent and kept in
the audit log, so it must be storable as it was written: no NUL (PostgreSQL's text type refuses it) and no lone
surrogate (it has no UTF-8 form); SQLite and PostgreSQL then keep the same thing.
"""

MAX_REASON = 2000


def reason_problem(reason: str, *, rejecting: bool = False) -> str | None:
    """Why `reason` cannot go with a decision (a rejection needs one), or None when it can. Lower case, no stop."""
    if rejecting and not reason.strip():
        return "a rejection needs a reason: the agent and the audit log will show it"
    if len(reason) > MAX_REASON:
        return f"the reason is too long: at most {MAX_REASON} characters"
    if "\x00" in reason:
        return "the reason must be text: it contains a NUL character"
    try:
        reason.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"the reason must be text: it contains a lone surrogate (\\u{ord(reason[exc.start]):04x})"
    return None

"""Errors of the approval domain; each says what was refused and why, in words an approver can read."""

from uuid import UUID


class ApprovalError(Exception):
    """Root of every error raised by `approvals`."""


class ApprovalNotFound(ApprovalError, LookupError):
    """Raised when no approval request has the given id."""

    def __init__(self, approval_id: UUID | str) -> None:
        super().__init__(f"No approval request with id {approval_id}")
        self.approval_id = approval_id


class AlreadyDecided(ApprovalError, ValueError):
    """Raised when a decision arrives for a request that is no longer pending."""

    def __init__(self, approval_id: UUID, status: str, *, expired_now: bool = False) -> None:
        super().__init__(f"Approval request {approval_id} is already {status}")
        self.approval_id = approval_id
        self.status = status
        self.expired_now = expired_now  # this very decision found the deadline passed and expired the request


class NotAllowed(ApprovalError, PermissionError):
    """Raised when someone who may not decide a request tries to."""

    def __init__(self, approval_id: UUID, approver: str, why: str) -> None:
        super().__init__(f"{approver} may not decide approval request {approval_id}: {why}")
        self.approval_id = approval_id
        self.approver = approver
        self.why = why


class GrantNotAllowed(ApprovalError, ValueError):
    """Raised when an approver asks for a grant that the request's rule does not allow (or not for that long)."""

    def __init__(self, approval_id: UUID, why: str) -> None:
        super().__init__(f"No grant with approval request {approval_id}: {why}")
        self.approval_id = approval_id
        self.why = why


class GrantNotFound(ApprovalError, LookupError):
    """Raised when no grant has the given id."""

    def __init__(self, grant_id: UUID | str) -> None:
        super().__init__(f"No grant with id {grant_id}")
        self.grant_id = grant_id


class GrantEnded(ApprovalError, ValueError):
    """Raised when a grant to revoke has already expired or been revoked."""

    def __init__(self, grant_id: UUID, status: str) -> None:
        super().__init__(f"Grant {grant_id} is already {status}")
        self.grant_id = grant_id
        self.status = status


class InvalidReason(ApprovalError, ValueError):
    """Raised when a decision's or a revocation's reason breaks the rule of `approvals.reasons`."""

    def __init__(self, why: str) -> None:
        super().__init__(why[:1].upper() + why[1:])
        self.why = why


class EditRefused(ApprovalError, ValueError):
    """Raised when an approval's edited arguments are refused: the edited call would not pass where the original
    did (the policy denies it, other approvers must decide it, the tool's schema rejects it). Nothing is decided."""

    def __init__(self, approval_id: UUID, why: str) -> None:
        super().__init__(f"The edited call was refused: {why}; nothing was decided")
        self.approval_id = approval_id
        self.why = why


class BadKey(ApprovalError, ValueError):
    """Raised when an audit signing or public key's text is not an Ed25519 key in a form signoff reads."""


class IdTooShort(ApprovalError, ValueError):
    """Raised when an id prefix is too short to name one request or grant safely."""

    def __init__(self, given: str, least: int) -> None:
        super().__init__(f"{given!r} is too short for an id: give at least {least} of its characters, or all of it")
        self.given = given
        self.least = least


class AmbiguousId(ApprovalError, LookupError):
    """Raised when an id prefix matches more than one request or grant."""

    def __init__(self, given: str, matches: list[str], what: str) -> None:
        shown = ", ".join(matches)
        super().__init__(f"{given!r} matches more than one {what}: {shown}; give more of the id")
        self.given = given
        self.matches = matches

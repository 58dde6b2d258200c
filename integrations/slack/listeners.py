"""The Bolt app: Approve / Approve with note / Reject clicks and modal submissions, decided through the approval engine.

Adapters only: decode the Slack payload, map the Slack user to an approver, call `ApprovalEngine.decide` (the one way
any channel decides), and tell the clicker what happened when the message update does not. Every listener
acks first (Slack allows 3 s). `SlackEvents` is `POST /slack/events`: it checks the signature and timestamp
itself before Bolt sees the request, so a malformed header is a 401 and never a 500, and drops exact replays.
"""

import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.internals import parse_body
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from approvals import service
from approvals.engine import ApprovalEngine
from approvals.errors import AlreadyDecided, ApprovalError, ApprovalNotFound, NotAllowed
from approvals.models import ApprovalRequest, ApprovalStatus, Verdict
from integrations.slack.blocks import (
    APPROVE,
    APPROVE_NOTE,
    ARGUMENTS_ACTION,
    ARGUMENTS_BLOCK,
    EDIT,
    EDIT_VIEW,
    MAX_INPUT,
    NOTE_VIEW,
    REASON_ACTION,
    REASON_BLOCK,
    REJECT,
    REJECT_VIEW,
    Card,
    edit_arguments,
    edit_modal,
    note_modal,
    reject_modal,
)
from integrations.slack.replays import ReplayCache, ReplayStoreDown

__all__ = ["SlackDecisions", "SlackEvents", "build_bolt_app"]

logger = logging.getLogger(__name__)

CHANNEL = "slack"
TOLERANCE = (
    300  # seconds either way, as Slack asks (https://docs.slack.dev/authentication/verifying-requests-from-slack/)
)
MAX_BODY = 1024 * 1024
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Id(_Payload):
    id: str


class _Action(_Payload):
    action_id: str
    value: str = ""


class BlockActions(_Payload):
    """The part of a `block_actions` payload signoff reads."""

    user: _Id
    channel: _Id | None = None
    trigger_id: str
    actions: Annotated[list[_Action], Field(min_length=1)]


class _View(_Payload):
    type: str  # Bolt reads it ("workflow_step" or not) before any listener runs
    callback_id: str
    private_metadata: str = ""
    state: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}


class ViewSubmission(_Payload):
    """The part of a `view_submission` payload signoff reads."""

    user: _Id
    view: _View

    def text(self) -> str:
        return self.value(REASON_BLOCK, REASON_ACTION).strip()

    def value(self, block: str, action: str) -> str:
        value = self.view.state.get("values", {}).get(block, {}).get(action, {}).get("value")
        return value if isinstance(value, str) else ""


# Why an approver's edit of a request may not be approved (None: it may); `integrations.editing.edit_refusal`,
# handed in by the composition root once the gateway (whose policies it checks against) exists.
EditCheck = Callable[[ApprovalRequest, service.Approver, Any], Awaitable[str | None]]


class SlackDecisions:
    """What a click or a modal submission does; `approvers` maps Slack user ids to approvers."""

    def __init__(
        self,
        engine: ApprovalEngine,
        client: AsyncWebClient,
        approvers: Mapping[str, service.Approver],
        refresh: Callable[[UUID], None] = lambda _id: None,
    ) -> None:
        self.engine = engine
        self.client = client
        self.approvers = dict(approvers)
        self.refresh = refresh  # brings a request's message up to date (a click on buttons that should be gone)
        self.check_edit: EditCheck | None = None
        self.decided = 0
        self.refused = 0

    # -- Bolt listeners: ack first, then work -----------------------------------------------------

    async def on_approve(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        click = self._click(body)
        if click is not None:
            request_id, channel = click
            await self.decide(request_id, click_user(body), channel, Verdict.APPROVE, "")

    async def on_approve_note(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        await self._open_modal(body, Verdict.APPROVE)

    async def on_edit(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        await self._open_modal(body, Verdict.APPROVE, edit=True)

    async def on_edit_submitted(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        """The edited arguments: not JSON, or refused by the re-check, is said in the modal (nothing is decided);
        otherwise the approval is decided as the API decides it."""
        submission = self._submission(body)
        target = self._target(submission) if submission is not None else None
        if submission is None or target is None:
            await ack()
            return
        request_id, channel = target
        user = submission.user.id
        try:
            arguments = json.loads(submission.value(ARGUMENTS_BLOCK, ARGUMENTS_ACTION))
        except ValueError as exc:
            await ack(response_action="errors", errors={ARGUMENTS_BLOCK: f"Not valid JSON: {exc}"[:MAX_INPUT]})
            return
        approver = self.approvers.get(user)
        why = await self._edit_refusal(request_id, approver, arguments) if approver is not None else None
        if why is not None:
            self.refused += 1
            detail = f"edited arguments refused: {why}"
            who = approver.name if approver is not None else user
            await self.engine.store.run(service.refuse_unknown, request_id, who, Verdict.APPROVE, CHANNEL, detail)
            error = f"Refused, nothing was decided: {why}"
            await ack(response_action="errors", errors={ARGUMENTS_BLOCK: error[:MAX_INPUT]})
            return
        await ack()
        await self.decide(request_id, user, channel, Verdict.APPROVE, submission.text(), arguments)

    async def _edit_refusal(self, request_id: UUID, approver: service.Approver, arguments: Any) -> str | None:
        """Why the edit is refused; None also when `decide` has the first word (not theirs, no longer pending)."""
        try:
            request = await self.engine.store.run(service.get_request, request_id)
        except ApprovalNotFound:
            return None
        if request.status != ApprovalStatus.PENDING or service.may_decide(request, approver) is not None:
            return None
        if self.check_edit is None:
            return "edits cannot be checked here; use the web page"
        return await self.check_edit(request, approver, arguments)

    async def on_reject(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        await self._open_modal(body, Verdict.REJECT)

    async def on_reject_submitted(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        submission = self._submission(body)
        if submission is not None and not submission.text():
            # Slack's client already insists on the field; this covers a reason of only spaces.
            await ack(response_action="errors", errors={REASON_BLOCK: "Say why: the agent and the audit log show it."})
            return
        await ack()
        await self._submitted(submission, Verdict.REJECT)

    async def on_note_submitted(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        await self._submitted(self._submission(body), Verdict.APPROVE)

    # -- the decision -----------------------------------------------------------------------------

    async def decide(
        self,
        request_id: UUID,
        user: str,
        channel: str | None,
        verdict: Verdict,
        comment: str,
        arguments: Any = None,
    ) -> None:
        """Decide as the approver `user` maps to (with `arguments`: approve with those, checked already); explain to
        them privately whatever the message will not show."""
        approver = await self._approver(request_id, user, channel, verdict)
        if approver is None:
            return
        try:
            result = await self.engine.decide(request_id, approver, verdict, comment, CHANNEL, None, arguments)
        except ApprovalError as exc:
            self.refused += 1
            if isinstance(exc, AlreadyDecided):
                self.refresh(request_id)
            await self._tell(channel, user, refusal(exc))
            return
        self.decided += 1
        if not result.settled:
            left = result.request.quorum - result.approvals
            await self._tell(
                channel,
                user,
                f"Your approval is recorded: {result.approvals} of {result.request.quorum}. "
                f"The call runs when {left} more approver{'s' if left != 1 else ''} agree{'' if left != 1 else 's'}.",
            )

    async def _approver(
        self, request_id: UUID, user: str, channel: str | None, verdict: Verdict
    ) -> service.Approver | None:
        approver = self.approvers.get(user)
        if approver is not None:
            return approver
        why = f"Slack user {user} is not the slack_user of any [[approvers]] entry"
        self.refused += 1
        try:
            await self.engine.store.run(service.refuse_unknown, request_id, f"slack:{user}", verdict, CHANNEL, why)
        except ApprovalNotFound as exc:
            await self._tell(channel, user, refusal(exc))
            return None
        await self._tell(
            channel,
            user,
            f"You are not a signoff approver, so nothing changed: your Slack user ({user}) is not the `slack_user` "
            "of any [[approvers]] entry in signoff's configuration. Ask whoever runs signoff to add you. "
            "This attempt is in the audit log.",
        )
        return None

    async def _open_modal(self, body: dict[str, Any], verdict: Verdict, *, edit: bool = False) -> None:
        click = self._click(body)
        if click is None:
            return
        request_id, channel = click
        user = click_user(body)
        approver = await self._approver(request_id, user, channel, verdict)
        if approver is None:
            return
        try:
            request = await self.engine.store.run(service.get_request, request_id)
        except ApprovalNotFound as exc:
            await self._tell(channel, user, refusal(exc))
            return
        overdue = service.as_utc(request.deadline) <= self.engine.now()
        if (
            service.may_decide(request, approver, self.engine.now()) is not None
            or request.status != ApprovalStatus.PENDING
            or overdue
        ):
            # Not theirs to decide (or too late): let decide() refuse it, which audits the attempt, and explain.
            await self.decide(request_id, user, channel, verdict, "")
            return
        card = Card.from_view(self.engine.view(request))
        if edit and len(edit_arguments(card)) > MAX_INPUT:
            await self._tell(channel, user, f"These arguments are too long to edit in Slack; edit them at {card.url}")
            return
        view = (
            edit_modal(card, channel or "")
            if edit
            else reject_modal(card, channel or "")
            if verdict == Verdict.REJECT
            else note_modal(card, channel or "")
        )
        try:
            await self.client.views_open(trigger_id=BlockActions.model_validate(body).trigger_id, view=view)
        except SlackApiError as exc:
            logger.error("Slack: views.open for %s failed: %s", request_id, exc.response.get("error"))
            await self._tell(channel, user, "Slack would not open the form; please try again.")

    async def _submitted(self, submission: ViewSubmission | None, verdict: Verdict) -> None:
        target = self._target(submission) if submission is not None else None
        if submission is None or target is None:
            return
        request_id, channel = target
        await self.decide(request_id, submission.user.id, channel, verdict, submission.text())

    def _target(self, submission: ViewSubmission) -> tuple[UUID, str | None] | None:
        """The request a modal decides and the channel its message is in, from the modal's private metadata."""
        try:
            meta = json.loads(submission.view.private_metadata)
            return UUID(str(meta["id"])), str(meta.get("channel") or "") or None
        except (ValueError, KeyError, TypeError):
            logger.warning("Slack: a %s submission without a request id; ignored", submission.view.callback_id)
            return None

    # -- decoding and telling ---------------------------------------------------------------------

    def _click(self, body: dict[str, Any]) -> tuple[UUID, str | None] | None:
        try:
            payload = BlockActions.model_validate(body)
            request_id = UUID(payload.actions[0].value)
        except (ValidationError, ValueError, IndexError):
            logger.warning("Slack: a click without a request id; ignored")
            return None
        return request_id, payload.channel.id if payload.channel else None

    def _submission(self, body: dict[str, Any]) -> ViewSubmission | None:
        try:
            return ViewSubmission.model_validate(body)
        except ValidationError:
            logger.warning("Slack: a malformed view submission; ignored")
            return None

    async def _tell(self, channel: str | None, user: str, text: str) -> None:
        if channel is None:
            logger.info("Slack: nowhere to tell %s: %s", user, text)
            return
        try:
            await self.client.chat_postEphemeral(channel=channel, user=user, text=text)
        except SlackApiError as exc:
            logger.warning("Slack: chat.postEphemeral to %s failed: %s", user, exc.response.get("error"))


class _UrlVerification(_Payload):
    challenge: str


_SHAPES: dict[str, type[_Payload]] = {
    "block_actions": BlockActions,
    "view_submission": ViewSubmission,
    "view_closed": ViewSubmission,
    "url_verification": _UrlVerification,
}


def payload_shape(body: bytes, content_type: str | None) -> bool | str:
    """Whether Bolt should see a signed body: True, False (a payload signoff ignores), or why it is unreadable.

    Bolt indexes into payloads without checking them (`body["actions"][0]`, `body["view"]["callback_id"]`), so a
    signed payload of the wrong shape would be a 500 from its middleware: check the kinds it acts on first.
    """
    try:
        payload = parse_body(body.decode("utf-8"), content_type)
    except (ValueError, RecursionError):
        return "the payload is not JSON"
    if not isinstance(payload, dict):
        return "the payload is not a JSON object"
    kind = payload.get("type")
    if not isinstance(kind, str):
        return 'the payload has no "type"'
    shape = _SHAPES.get(kind)
    if shape is None:
        return False
    try:
        shape.model_validate(payload)
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "payload"
        return f"{kind}: {where}: {exc.errors()[0]['msg']}"
    try:  # Bolt reads the ids it routes on (team, enterprise, user, channel, authorizations) without checking them
        build_async_context(AsyncBoltContext(), payload)
    except (TypeError, KeyError, IndexError, AttributeError, ValueError) as exc:
        return f"{kind}: its team, enterprise, user or channel is not what Slack sends ({type(exc).__name__})"
    return True


def click_user(body: dict[str, Any]) -> str:
    user = body.get("user")
    return str(user.get("id", "")) if isinstance(user, dict) else ""


def refusal(exc: ApprovalError) -> str:
    """Why nothing changed, for the person who clicked."""
    if isinstance(exc, NotAllowed):
        return f"You can't decide this request, so nothing changed: {exc.why}. This attempt is in the audit log."
    if isinstance(exc, AlreadyDecided):
        return f"Nothing changed: this request is already {exc.status}."
    if isinstance(exc, ApprovalNotFound):
        return "Nothing changed: signoff has no such request any more."
    return f"Nothing changed: {exc}"


def build_bolt_app(client: AsyncWebClient, signing_secret: str, decisions: SlackDecisions) -> AsyncApp:
    """The Bolt app, with request verification on (Socket Mode requests skip it: the socket is authenticated)."""
    app = AsyncApp(
        client=client,
        signing_secret=signing_secret,
        request_verification_enabled=True,
        process_before_response=False,
    )
    app.action(APPROVE)(decisions.on_approve)
    app.action(APPROVE_NOTE)(decisions.on_approve_note)
    app.action(REJECT)(decisions.on_reject)
    app.view(REJECT_VIEW)(decisions.on_reject_submitted)
    app.view(NOTE_VIEW)(decisions.on_note_submitted)
    app.action(EDIT)(decisions.on_edit)
    app.view(EDIT_VIEW)(decisions.on_edit_submitted)

    async def link_opened(ack: AsyncAck) -> None:
        await ack()  # the "Open" button is a plain link; Slack still sends its click

    app.action("signoff_open")(link_opened)
    return app


class SlackEvents:
    """`POST /slack/events`: Slack's HTTP mode. Answers 503 until the lifespan sets `handler` and `secret`."""

    def __init__(self, enabled: bool = True, clock: Callable[[], float] = time.time) -> None:
        self.enabled = enabled  # without a signing secret (Socket Mode only) there is no HTTP mode
        self.handler: AsyncSlackRequestHandler | None = None
        self.secret: str | None = None
        self.clock = clock
        self.rejected = 0
        self.replays = 0
        self.cache: ReplayCache | None = None  # shared by every replica (replays.py); set with `handler`

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.respond(Request(scope, receive))
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        if not self.enabled:
            return JSONResponse({"error": "Slack HTTP mode is off: [slack] has no signing_secret"}, status_code=404)
        if self.handler is None or self.secret is None or self.cache is None:
            return JSONResponse({"error": "signoff is starting"}, status_code=503)
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY:
            return JSONResponse({"error": "body too large"}, status_code=413)
        body = await request.body()
        problem = self._check(
            request.headers.get("x-slack-request-timestamp"), request.headers.get("x-slack-signature"), body
        )
        if problem is not None:
            self.rejected += 1
            logger.warning("Slack: refused a request to /slack/events: %s", problem)
            return JSONResponse({"error": "invalid request"}, status_code=401)
        try:
            first = await self.cache.first(request.headers["x-slack-signature"])
        except ReplayStoreDown as exc:
            logger.error("Slack: refused a signed request to /slack/events: %s", exc)
            return JSONResponse({"error": f"signoff cannot tell whether this is a replay: {exc}"}, status_code=503)
        if not first:
            # The same signed request again, on any replica (a replay, or a proxy's retry): it did what it does.
            self.replays += 1
            return Response(status_code=200)
        shape = payload_shape(body, request.headers.get("content-type"))
        if isinstance(shape, str):
            logger.warning("Slack: refused a signed request to /slack/events: %s", shape)
            return JSONResponse({"error": f"unreadable Slack payload: {shape}"}, status_code=400)
        if not shape:
            return Response(status_code=200)  # a kind of payload signoff does not act on: acknowledged, ignored
        try:
            return await self.handler.handle(request)
        except Exception:  # the Slack listener's top-level handler: a signed but unreadable body is a 400
            logger.exception("Slack: cannot handle a signed request")
            return JSONResponse({"error": "unreadable request"}, status_code=400)

    def _check(self, timestamp: str | None, signature: str | None, body: bytes) -> str | None:
        if timestamp is None or signature is None:
            return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
        if _TIMESTAMP.fullmatch(timestamp) is None:
            return "malformed X-Slack-Request-Timestamp"
        if abs(self.clock() - int(timestamp)) > TOLERANCE:
            return "X-Slack-Request-Timestamp is more than 5 minutes from now (a replay, or a wrong clock)"
        if _SIGNATURE.fullmatch(signature) is None:
            return "malformed X-Slack-Signature"
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return "the body is not UTF-8"
        expected = SignatureVerifier(self.secret or "-").generate_signature(timestamp=timestamp, body=body)
        if expected is None or not hmac.compare_digest(expected, signature):
            return "bad signature"
        return None

"""Email through Amazon SES: one message per escalated Incident.

Sent when an Incident is Escalated (including notify_team), from SES_SENDER
to the policy's notify.email.recipients, else EMAIL_RECIPIENT (comma-separated).
SES has no idempotency token, so the intent is claimed before sending: a
conditional put of `guard#email#<namespace/name>` / `escalated#<uid>` in the
timeline table. Whoever wins the claim sends and writes the MessageId into
it; a later attempt finds the claim and does not send again. A claim
without a MessageId means its sender stopped between claiming and
recording: the mail may or may not have gone out, and it is not sent again
(at most once, said in the Notified condition). The same holds when SES
does not answer (a read timeout, a dropped connection): it may have sent.
A send that certainly failed (SES answered with an error, or was never
reached) releases the claim for the next try. The SES client must not retry
on its own (`total_max_attempts` 1): its retry after a lost answer would send
again. Without a table the claims live in memory: once per process only.

The sender identity must be verified in SES, or SES answers MessageRejected.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError

from ..aws import attribute, error_code, explain, plain, transient
from ..escalation import latest_step
from ..models import EscalationStepTaken, Incident
from ..policy import Policy
from ..timeline.dynamodb import table_key
from .channel import ChannelFailed, Told
from .story import describe

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef
    from mypy_boto3_ses import SESClient

_T = TypeVar("_T")

CLAIM_TTL_SECONDS = 90 * 24 * 3600
# For the SES client: no retries of its own (see the module's docstring).
SES_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=3, read_timeout=5
)


@dataclass(frozen=True)
class EmailKey:
    incident_id: str  # namespace/name
    uid: str
    owner: str  # this attempt, for compare-and-swap
    what: str = "escalated"  # which email: the escalation's, or an escalation step's


@dataclass(frozen=True)
class Claimed:
    ours: bool
    message_id: str | None = None  # when not ours: what the earlier sender recorded


class EmailClaims(Protocol):
    async def claim(self, key: EmailKey) -> Claimed: ...

    async def sent(self, key: EmailKey, message_id: str) -> None: ...

    async def release(self, key: EmailKey) -> None: ...


class DynamoEmailClaims:
    def __init__(self, *, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    async def claim(self, key: EmailKey) -> Claimed:
        return await asyncio.to_thread(self._claim, key)

    async def sent(self, key: EmailKey, message_id: str) -> None:
        await asyncio.to_thread(
            _aws,
            "record the sent email",
            lambda: self._client.update_item(
                TableName=self._table,
                Key=_key(key),
                UpdateExpression="SET message_id = :id",
                ConditionExpression="claimed_by = :owner",
                ExpressionAttributeValues={
                    ":id": attribute(message_id),
                    ":owner": attribute(key.owner),
                },
            ),
        )

    async def release(self, key: EmailKey) -> None:
        await asyncio.to_thread(
            _aws,
            "release the email claim",
            lambda: self._client.delete_item(
                TableName=self._table,
                Key=_key(key),
                ConditionExpression="claimed_by = :owner AND attribute_not_exists(message_id)",
                ExpressionAttributeValues={":owner": attribute(key.owner)},
            ),
        )

    def _claim(self, key: EmailKey) -> Claimed:
        now = datetime.now(UTC)
        try:
            self._client.put_item(
                TableName=self._table,
                Item={
                    **_key(key),
                    "kind": attribute("email_claim"),
                    "claimed_by": attribute(key.owner),
                    "claimed_at": attribute(now.isoformat()),
                    "expires_at": attribute(int(now.timestamp()) + CLAIM_TTL_SECONDS),
                },
                ConditionExpression="attribute_not_exists(incident_id)",
            )
            return Claimed(ours=True)
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise _failed(error, doing="claim the email") from error
        except BotoCoreError as error:
            raise _failed(error, doing="claim the email") from error
        found = _aws(
            "read the email claim",
            lambda: self._client.get_item(
                TableName=self._table, Key=_key(key), ConsistentRead=True
            ),
        )
        item = plain(found.get("Item", {}))
        if item.get("claimed_by") == key.owner:
            # Our own put, whose answer was lost and retried by boto3.
            return Claimed(ours=True)
        return Claimed(ours=False, message_id=item.get("message_id"))


class MemoryEmailClaims:
    """Claims in this process only: a restart or another replica may send again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claims: dict[tuple[str, str, str], tuple[str, str | None]] = {}

    async def claim(self, key: EmailKey) -> Claimed:
        with self._lock:
            existing = self._claims.setdefault(
                (key.incident_id, key.uid, key.what), (key.owner, None)
            )
        if existing[0] == key.owner:
            return Claimed(ours=True)
        return Claimed(ours=False, message_id=existing[1])

    async def sent(self, key: EmailKey, message_id: str) -> None:
        with self._lock:
            self._claims[(key.incident_id, key.uid, key.what)] = (key.owner, message_id)

    async def release(self, key: EmailKey) -> None:
        with self._lock:
            if self._claims.get((key.incident_id, key.uid, key.what)) == (key.owner, None):
                del self._claims[(key.incident_id, key.uid, key.what)]


class EmailChannel:
    name = "email"

    def __init__(
        self,
        *,
        client: SESClient,
        claims: EmailClaims,
        sender: str,
        recipients: list[str],
        link_template: str | None = None,
    ) -> None:
        self._client = client
        self._claims = claims
        self._sender = sender
        self._recipients = recipients
        self._link_template = link_template

    def wants(self, incident: Incident, *, policy: Policy) -> bool:
        return self._escalation_due(incident) or _step(incident) is not None

    def _escalation_due(self, incident: Incident) -> bool:
        notifications = incident.status.notifications
        sent = notifications is not None and notifications.email is not None
        return incident.status.phase == "Escalated" and not sent

    async def tell(self, incident: Incident, *, policy: Policy) -> Told:
        told = Told()
        if self._escalation_due(incident):
            target = policy.spec.notify.email
            recipients = (target.recipients if target else None) or self._recipients
            if not recipients:
                raise ChannelFailed(
                    "no recipients: set EMAIL_RECIPIENT or the policy's notify.email.recipients",
                    retryable=False,
                )
            told = await self._once(incident, recipients, what="escalated")
        step = _step(incident)
        if step is not None:
            # A step of the escalation chain: its own email, once (its own claim).
            step_told = await self._once(
                incident, step.email, what=f"escalation-step{step.number}", subject="Still "
                f"unacknowledged (escalation step {step.step})"
            )  # fmt: skip
            note = f"escalation step {step.number}: {step_told.note}"
            told = Told(told.notifications, f"{told.note}; {note}" if told.note else note)
        return told

    async def _once(
        self, incident: Incident, recipients: list[str], *, what: str, subject: str = "Escalated"
    ) -> Told:
        """Send one email about the Incident, once across attempts (claimed first)."""
        key = EmailKey(
            incident_id=incident.reference,
            uid=str(incident.metadata.get("uid", "")),
            owner=uuid.uuid4().hex,
            what=what,
        )
        first = what == "escalated"  # the one status.notifications.email records
        claimed = await self._claims.claim(key)
        if not claimed.ours:
            if claimed.message_id:
                found = {"email": {"messageId": claimed.message_id}} if first else {}
                return Told(found, "sent before")
            return Told(
                note="an earlier attempt claimed this email and recorded no message id "
                "(stopped while sending?); not sent again"
            )
        try:
            message_id = await asyncio.to_thread(self._send, incident, recipients, subject)
        except HTTPClientError as error:
            # Sent, and no answer came back? It may have gone out: keep the claim.
            raise ChannelFailed(
                explain(error, doing="send the email")
                + "; SES may have sent it, so it is not sent again",
                retryable=False,
            ) from error
        except (ClientError, BotoCoreError) as error:
            # SES answered with an error, or was never reached: nothing went
            # out, another try may send.
            failure = _failed(error, doing="send the email")
            try:
                await self._claims.release(key)
            except ChannelFailed as stuck:
                raise ChannelFailed(
                    f"{failure}; and {stuck}, so the claim stays and it is not sent again",
                    retryable=False,
                ) from failure
            raise failure from error
        note = f"sent to {len(recipients)} recipient{'s' if len(recipients) > 1 else ''}"
        try:
            await self._claims.sent(key, message_id)
        except ChannelFailed as failure:
            # Sent all the same; the status write records the id.
            note += f" (the claim was not updated: {failure})"
        return Told({"email": {"messageId": message_id}} if first else {}, note)

    def _send(self, incident: Incident, recipients: list[str], subject: str) -> str:
        spec = incident.spec
        answer = self._client.send_email(
            Source=self._sender,
            Destination={"ToAddresses": recipients},
            Message={
                "Subject": {"Data": f"[{spec.severity}] {subject}: {spec.title}"[:200]},
                "Body": {"Text": {"Data": describe(incident, link_template=self._link_template)}},
            },
        )
        return answer["MessageId"]


def _key(key: EmailKey) -> dict[str, AttributeValueTypeDef]:
    return table_key(f"guard#email#{key.incident_id}", f"{key.what}#{key.uid}")


def _step(incident: Incident) -> EscalationStepTaken | None:
    """The escalation step the latest transition took, if it emails someone."""
    step = latest_step(incident)
    return step if step is not None and step.email else None


def _failed(error: ClientError | BotoCoreError, *, doing: str) -> ChannelFailed:
    # Throttled or failing for now: worth another attempt. The rest
    # (MessageRejected: an unverified sender; a bad address) need a human.
    return ChannelFailed(explain(error, doing=doing), retryable=transient(error))


def _aws(doing: str, call: Callable[[], _T]) -> _T:
    try:
        return call()
    except (ClientError, BotoCoreError) as error:
        raise _failed(error, doing=doing) from error

"""`DynamoGuard`: action claims in the timeline table (see claims.py for the rules).

Claiming an action is one `TransactWriteItems` that, atomically:

1. puts the Incident's claim         (`guard#incident#<incident>`, `restart`)
   if there is none yet;
2. stamps the target's last action   (`guard#service#<target>`, `cooldown`)
   if the previous stamp is older than the cooldown;
3. counts the action in its hour     (`guard#service#<target>`, `hour#<UTC hour>`)
   if that hour is below the cap.

If any condition fails, nothing is written, and the cancellation reasons say
which one. The state is in DynamoDB, so it holds across processes, replicas
and crashes.

The stored names (`restart`, `last_restart_at`, `restarts`) are from when
the one action was a restart; they stay, so an upgrade keeps the cooldowns
and counts that are running. A claim written before then names its ECS
deployments (`previous_deployment_id`, `deployment_id`); it is read as the
same claim.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from botocore.exceptions import BotoCoreError, ClientError

from ..aws import attribute, error_code, plain
from ..models import RemediationPolicy
from ..timeline.dynamodb import table_key as _key
from . import RemediationFailed, aws_failure
from .claims import Claim, cap_refusal, cooldown_refusal, epoch, iso, latest

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeValueTypeDef,
        TransactWriteItemTypeDef,
        UniversalAttributeValueTypeDef,
        UpdateTypeDef,
    )

_T = TypeVar("_T")

# Conflicting concurrent transactions are cancelled by DynamoDB
# ("TransactionConflict") rather than queued; the loser re-evaluates, and
# normally then meets the winner's condition (cooldown, claim).
CONFLICT_ATTEMPTS = 4
CLAIM_SORT_KEY = "restart"
COOLDOWN_SORT_KEY = "cooldown"


def incident_key(incident_id: str) -> str:
    return f"guard#incident#{incident_id}"


def service_key(target: str) -> str:
    return f"guard#service#{target}"


class DynamoGuard:
    def __init__(self, *, client: DynamoDBClient, table: str, ttl_days: int = 90) -> None:
        self._client = client
        self._table = table
        self._claim_ttl = ttl_days * 24 * 3600

    async def read(self, incident_id: str) -> Claim | None:
        return await asyncio.to_thread(self._read, incident_id)

    async def claim(self, claim: Claim, *, limits: RemediationPolicy) -> Claim:
        return await asyncio.to_thread(self._claim, claim, limits)

    async def take_over(
        self, claim: Claim, taken: Claim, *, limits: RemediationPolicy
    ) -> Claim | None:
        return await asyncio.to_thread(self._take_over, claim, taken, limits)

    async def complete(self, claim: Claim, *, receipt: str, acted_at: datetime) -> Claim:
        return await asyncio.to_thread(self._complete, claim, receipt, acted_at)

    async def release(self, claim: Claim) -> None:
        await asyncio.to_thread(self._release, claim)

    # The blocking halves, run in a thread.

    def _read(self, incident_id: str) -> Claim | None:
        found = self._call(
            "read the action claim",
            lambda: self._client.get_item(
                TableName=self._table,
                Key=_key(incident_key(incident_id), CLAIM_SORT_KEY),
                ConsistentRead=True,
            ),
        )
        item = found.get("Item")
        return _claim_from(item) if item else None

    def _claim(self, claim: Claim, limits: RemediationPolicy) -> Claim:
        now = claim.claimed_at
        hour_start = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        cap_condition = "restarts < :cap"
        if limits.max_per_hour > 0:
            cap_condition = "attribute_not_exists(restarts) OR " + cap_condition
        # With a cap of 0 the bare comparison fails even on a missing counter.
        items: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": self._claim_item(claim),
                    "ConditionExpression": "attribute_not_exists(incident_id)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
            {"Update": self._stamp_service(claim, limits, exempt_own=False)},
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _key(service_key(claim.target), claim.hour),
                    "UpdateExpression": "ADD restarts :one SET expires_at = :expires",
                    "ConditionExpression": cap_condition,
                    "ExpressionAttributeValues": {
                        ":one": attribute(1),
                        ":cap": attribute(limits.max_per_hour),
                        ":expires": attribute(int(epoch(hour_start)) + 3600 + 24 * 3600),
                    },
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
        ]
        reasons = self._transact("claim the action", items)
        if reasons is None:
            return claim
        failed = [reason.get("Code") == "ConditionalCheckFailed" for reason in reasons]
        claimed, cooled, capped = [*failed, False, False, False][:3]
        if claimed:
            # Someone (an earlier attempt for this Incident) claimed it first.
            # The cooldown it set would also fail; that is not a refusal.
            old = reasons[0].get("Item")
            existing = _claim_from(old) if old else self._read(claim.incident_id)
            if existing is None:
                # Released between the transaction and the read: rare enough
                # to hand back to the caller's retry.
                raise RemediationFailed(
                    f"The action claim of {claim.incident_id} changed while it was read; try again."
                )
            return existing
        cooldown = None
        if cooled:
            stamp = reasons[1].get("Item", {})
            cooldown = cooldown_refusal(
                target=claim.target,
                limits=limits,
                last_at=float(stamp.get("last_restart_at", {}).get("N", epoch(now))),
                last_incident=stamp.get("last_incident", {}).get("S"),
            )
        cap = cap_refusal(target=claim.target, limits=limits, now=now) if capped else None
        raise latest(cooldown, cap)

    def _take_over(self, old: Claim, taken: Claim, limits: RemediationPolicy) -> Claim | None:
        items: list[TransactWriteItemTypeDef] = [
            {
                "Update": {
                    "TableName": self._table,
                    "Key": _key(incident_key(old.incident_id), CLAIM_SORT_KEY),
                    "UpdateExpression": "SET claimed_by = :new, claimed_at = :at, "
                    "cooldown_stamp = :stamp, observed_before = :previous",
                    "ConditionExpression": "claimed_by = :old "
                    "AND attribute_not_exists(receipt) AND attribute_not_exists(deployment_id)",
                    "ExpressionAttributeValues": {
                        ":new": attribute(taken.claimed_by),
                        ":old": attribute(old.claimed_by),
                        ":at": attribute(iso(taken.claimed_at, precise=True)),
                        ":stamp": attribute(taken.cooldown_stamp),
                        ":previous": attribute(taken.before or ""),
                    },
                }
            },
            {"Update": self._stamp_service(taken, limits, exempt_own=True)},
        ]
        reasons = self._transact("take over the action claim", items)
        if reasons is None:
            return taken
        if reasons[0].get("Code") == "ConditionalCheckFailed":
            return None
        stamp = reasons[1].get("Item", {})
        raise cooldown_refusal(
            target=taken.target,
            limits=limits,
            last_at=float(stamp.get("last_restart_at", {}).get("N", taken.cooldown_stamp)),
            last_incident=stamp.get("last_incident", {}).get("S"),
        )[1]

    def _complete(self, claim: Claim, receipt: str, acted_at: datetime) -> Claim:
        try:
            self._client.update_item(
                TableName=self._table,
                Key=_key(incident_key(claim.incident_id), CLAIM_SORT_KEY),
                UpdateExpression="SET receipt = :receipt, acted_at = :at",
                ConditionExpression="attribute_exists(incident_id) "
                "AND attribute_not_exists(receipt) AND attribute_not_exists(deployment_id)",
                ExpressionAttributeValues={
                    ":receipt": attribute(receipt),
                    ":at": attribute(iso(acted_at, precise=True)),
                },
            )
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                raise aws_failure(error, doing="record the action") from error
            stored = self._read(claim.incident_id)
            if stored is not None:
                return stored
        except BotoCoreError as error:
            raise aws_failure(error, doing="record the action") from error
        return replace(claim, receipt=receipt, acted_at=acted_at)

    def _release(self, claim: Claim) -> None:
        # Three separate writes, not a transaction: each has its own reason
        # to be skipped. The claim goes first; if it is no longer ours
        # (another process took it over), the stamps are not ours either.
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=_key(incident_key(claim.incident_id), CLAIM_SORT_KEY),
                ConditionExpression="claimed_by = :owner AND attribute_not_exists(receipt) "
                "AND attribute_not_exists(deployment_id)",
                ExpressionAttributeValues={":owner": attribute(claim.claimed_by)},
            )
        except ClientError as error:
            if error_code(error) == "ConditionalCheckFailedException":
                return
            raise aws_failure(error, doing="release the action claim") from error
        except BotoCoreError as error:
            raise aws_failure(error, doing="release the action claim") from error
        self._unless_changed(
            # A later restart (cooldown 0) keeps its own stamp.
            "clear the cooldown stamp",
            Key=_key(service_key(claim.target), COOLDOWN_SORT_KEY),
            UpdateExpression="REMOVE last_restart_at, last_restart, last_incident",
            ConditionExpression="last_restart_at = :stamp AND last_incident = :incident",
            ExpressionAttributeValues={
                ":stamp": attribute(claim.cooldown_stamp),
                ":incident": attribute(claim.incident_id),
            },
        )
        self._unless_changed(
            "uncount the action",
            Key=_key(service_key(claim.target), claim.hour),
            UpdateExpression="ADD restarts :minus_one",
            ConditionExpression="restarts > :zero",
            ExpressionAttributeValues={":minus_one": attribute(-1), ":zero": attribute(0)},
        )

    def _unless_changed(self, doing: str, **update: Any) -> None:
        try:
            self._client.update_item(TableName=self._table, **update)
        except ClientError as error:
            if error_code(error) != "ConditionalCheckFailedException":
                # The claim is gone already; a stale stamp or count only delays
                # other restarts until it expires, so report, do not undo.
                raise aws_failure(error, doing=doing) from error
        except BotoCoreError as error:
            raise aws_failure(error, doing=doing) from error

    def _claim_item(self, claim: Claim) -> dict[str, UniversalAttributeValueTypeDef]:
        item: dict[str, UniversalAttributeValueTypeDef] = {
            **_key(incident_key(claim.incident_id), CLAIM_SORT_KEY),
            "kind": attribute("action_claim"),
            "incident": attribute(claim.incident_id),
            "action": attribute(claim.action),
            "target": attribute(claim.target),
            "claimed_by": attribute(claim.claimed_by),
            "claimed_at": attribute(iso(claim.claimed_at, precise=True)),
            "cooldown_stamp": attribute(claim.cooldown_stamp),
            "hour": attribute(claim.hour),
            "expires_at": attribute(int(epoch(claim.claimed_at)) + self._claim_ttl),
        }
        if claim.before is not None:
            item["observed_before"] = attribute(claim.before)
        return item

    def _stamp_service(
        self, claim: Claim, limits: RemediationPolicy, *, exempt_own: bool
    ) -> UpdateTypeDef:
        values: dict[str, AttributeValueTypeDef] = {
            ":stamp": attribute(claim.cooldown_stamp),
            ":iso": attribute(iso(claim.claimed_at)),
            ":incident": attribute(claim.incident_id),
            ":expires": attribute(int(claim.cooldown_stamp) + limits.cooldown_seconds + 24 * 3600),
        }
        update: UpdateTypeDef = {
            "TableName": self._table,
            "Key": _key(service_key(claim.target), COOLDOWN_SORT_KEY),
            "UpdateExpression": "SET last_restart_at = :stamp, last_restart = :iso, "
            "last_incident = :incident, expires_at = :expires",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if limits.cooldown_seconds > 0:
            condition = "attribute_not_exists(last_restart_at) OR last_restart_at < :cutoff"
            if exempt_own:
                condition = "last_incident = :incident OR " + condition
            values[":cutoff"] = attribute(claim.cooldown_stamp - limits.cooldown_seconds)
            update["ConditionExpression"] = condition
        update["ExpressionAttributeValues"] = values
        return update

    def _transact(
        self, doing: str, items: list[TransactWriteItemTypeDef]
    ) -> list[dict[str, Any]] | None:
        """Run a transaction; None if it committed, else its cancellation reasons."""
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                self._client.transact_write_items(TransactItems=items)
                return None
            except ClientError as error:
                if error_code(error) != "TransactionCanceledException":
                    raise aws_failure(error, doing=doing) from error
                reasons = [
                    cast(dict[str, Any], reason)
                    for reason in error.response.get("CancellationReasons", [])
                ]
                codes = {reason.get("Code") for reason in reasons} - {"None", None}
                if "ConditionalCheckFailed" in codes:
                    return reasons
                if codes != {"TransactionConflict"} or attempt == CONFLICT_ATTEMPTS:
                    raise aws_failure(error, doing=doing) from error
            except BotoCoreError as error:
                raise aws_failure(error, doing=doing) from error
            # Jittered, so that two losers do not collide again in step.
            time.sleep(random.uniform(0.05, 0.2) * attempt)
        raise AssertionError("unreachable")

    def _call(self, doing: str, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except (ClientError, BotoCoreError) as error:
            raise aws_failure(error, doing=doing) from error


def _claim_from(item: Any) -> Claim:
    values = plain(item)

    def text(name: str) -> str | None:
        value = values.get(name)
        return str(value) if value is not None else None

    # A claim written before actions were plugins names its ECS deployments.
    acted_at = text("acted_at") or text("restarted_at")
    return Claim(
        incident_id=text("incident") or "",
        action=text("action") or "restart_service",
        target=text("target") or "",
        claimed_by=text("claimed_by") or "",
        claimed_at=datetime.fromisoformat(text("claimed_at") or "1970-01-01T00:00:00+00:00"),
        cooldown_stamp=float(values.get("cooldown_stamp", 0)),
        hour=text("hour") or "",
        # An empty marker is one too (a Deployment never restarted before).
        before=text("observed_before")
        if "observed_before" in values
        else text("previous_deployment_id"),
        receipt=text("receipt") or text("deployment_id"),
        acted_at=datetime.fromisoformat(acted_at) if acted_at else None,
    )

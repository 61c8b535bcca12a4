"""What an HTTP channel delivered, kept where a restarted operator finds it.

A channel that posts events (PagerDuty, outbound webhooks) records each
event the destination accepted, right after the acceptance, and looks for
the record before sending. An operator killed after PagerDuty took a
trigger and before the Incident's status said so finds the record on
restart and does not send it again. In DynamoDB (the timeline table, item
`guard#<channel>#<namespace/name>` / `<event>#<uid>`, with a TTL) when
TIMELINE_TABLE is set; else in memory, once per process only.

The window left is the one between the destination's answer and the
record's write: an event sent in it is sent again after a restart. That is
why every event carries a key the destination deduplicates on (PagerDuty's
dedup_key makes a second trigger part of the same alert; a webhook's event
id is the same both times).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from ..aws import attribute, explain, transient
from ..timeline.dynamodb import table_key
from .channel import ChannelFailed

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_T = TypeVar("_T")

log = logging.getLogger(__name__)

RECORD_TTL_SECONDS = 90 * 24 * 3600


@dataclass(frozen=True)
class DeliveryKey:
    channel: str  # pagerduty, webhooks
    incident_id: str  # namespace/name
    event: str  # what was delivered: trigger@<uid>, <event id>@<url digest>

    @property
    def partition(self) -> str:
        return f"guard#{self.channel}#{self.incident_id}"


class Delivered(Protocol):
    async def was(self, key: DeliveryKey) -> bool:
        """Whether the event was delivered before (ChannelFailed when that cannot be told)."""
        ...

    async def record(self, key: DeliveryKey) -> None: ...


async def record_taken(delivered: Delivered, key: DeliveryKey) -> None:
    """Record that the destination took an event; a record that cannot be
    written is logged, not raised: the event went out all the same."""
    try:
        await delivered.record(key)
    except ChannelFailed as failure:
        log.warning(
            "event sent, not recorded",
            extra={"incident": key.incident_id, "channel": key.channel, "error": str(failure)},
        )


class DynamoDelivered:
    def __init__(self, *, client: DynamoDBClient, table: str) -> None:
        self._client = client
        self._table = table

    async def was(self, key: DeliveryKey) -> bool:
        def get() -> bool:
            found = self._client.get_item(
                TableName=self._table, Key=table_key(key.partition, key.event), ConsistentRead=True
            )
            return "Item" in found

        return await asyncio.to_thread(_aws, "look for an earlier delivery", get)

    async def record(self, key: DeliveryKey) -> None:
        now = datetime.now(UTC)

        def put() -> None:
            self._client.put_item(
                TableName=self._table,
                Item={
                    **table_key(key.partition, key.event),
                    "kind": attribute(f"{key.channel}_delivery"),
                    "delivered_at": attribute(now.isoformat()),
                    "expires_at": attribute(int(now.timestamp()) + RECORD_TTL_SECONDS),
                },
            )

        await asyncio.to_thread(_aws, "record the delivery", put)


class MemoryDelivered:
    """Records in this process only: a restart may deliver again (deduplicated downstream)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: set[DeliveryKey] = set()

    async def was(self, key: DeliveryKey) -> bool:
        with self._lock:
            return key in self._keys

    async def record(self, key: DeliveryKey) -> None:
        with self._lock:
            self._keys.add(key)


def _aws(doing: str, call: Callable[[], _T]) -> _T:
    try:
        return call()
    except (ClientError, BotoCoreError) as error:
        raise ChannelFailed(explain(error, doing=doing), retryable=transient(error)) from error

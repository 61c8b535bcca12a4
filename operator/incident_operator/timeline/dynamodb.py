"""Timeline stores: DynamoDB (TIMELINE_TABLE) and, when that is unset, the log.

The table is the serverless agent's: partition key `incident_id` (S), sort
key `ts` (S). Each entry becomes one item, written with a conditional put, so
writing the same entry twice (a retry after a timeout, a handler re-run
after a crash) leaves exactly one item. Items carry `expires_at` (epoch
seconds) for DynamoDB's TTL; enabling TTL on the table is infrastructure's
job, `create_table` does it for the dev stack and the tests.

The restart claims (`remediate/dynamo_guard.py`) keep their items in the same table
under `guard#...` partition keys, which never collide with an Incident's
`namespace/name`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from ..aws import CLIENT_CONFIG, attribute, error_code, plain
from ..aws_calls import timed
from . import Entry

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.paginator import QueryPaginator
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef, PaginatorConfigTypeDef

log = logging.getLogger(__name__)


TTL_ATTRIBUTE = "expires_at"
# Attributes an entry maps to directly; anything else on an item (written by
# the serverless agent, say) is handed back in `detail`.
_FIELDS = ("incident_id", "ts", "kind", "message", "phase", "detail")


class DynamoTimeline:
    """The timeline in a DynamoDB table; `record` is idempotent per (incident_id, ts)."""

    def __init__(
        self,
        table: str,
        *,
        client: DynamoDBClient | None = None,
        ttl_days: int = 90,
        page_size: int | None = None,
        region: str | None = None,
    ) -> None:
        self._table = table
        # `region` applies to the client made here when none is given.
        self._client = client or timed(
            boto3.client("dynamodb", region_name=region, config=CLIENT_CONFIG)
        )
        self._ttl_seconds = ttl_days * 24 * 3600
        # None: DynamoDB's own page size (1 MB). Small values exist for tests.
        self._page_size = page_size

    async def record(self, entries: list[Entry]) -> None:
        if entries:
            await asyncio.to_thread(self._put_all, entries)

    async def read(self, incident_id: str) -> list[Entry]:
        return await asyncio.to_thread(self._query, incident_id)

    async def has(self, entry: Entry) -> bool:
        found = await asyncio.to_thread(
            self._client.get_item,
            TableName=self._table,
            Key={"incident_id": {"S": entry.incident_id}, "ts": {"S": entry.ts}},
            ProjectionExpression="ts",
            ConsistentRead=True,
        )
        return "Item" in found

    def _put_all(self, entries: list[Entry]) -> None:
        # One put per entry, not BatchWriteItem: batches cannot be conditional,
        # and the condition is what makes a retry harmless.
        expires_at = int(time.time()) + self._ttl_seconds
        for entry in entries:
            try:
                self._client.put_item(
                    TableName=self._table,
                    Item=_to_item(entry, expires_at=expires_at),
                    ConditionExpression="attribute_not_exists(incident_id)",
                )
            except ClientError as error:
                if error_code(error) != "ConditionalCheckFailedException":
                    raise
                # Already written by an earlier attempt: the first copy stands.

    def _query(self, incident_id: str) -> list[Entry]:
        paginator: QueryPaginator = self._client.get_paginator("query")
        pagination: PaginatorConfigTypeDef = {}
        if self._page_size is not None:
            pagination["PageSize"] = self._page_size
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="incident_id = :id",
            ExpressionAttributeValues={":id": {"S": incident_id}},
            # Read-your-writes: the reconciler reads right after recording.
            ConsistentRead=True,
            ScanIndexForward=True,
            PaginationConfig=pagination,
        )
        return [_from_item(item) for page in pages for item in page.get("Items", [])]


class LogTimeline:
    """The timeline when there is no table: JSON log lines, plus recent entries in memory.

    Nothing survives a restart; `read` only sees what this process recorded.
    Memory is bounded: `keep` entries per incident, `incidents` incidents.
    """

    def __init__(self, *, keep: int = 200, incidents: int = 1000) -> None:
        self._keep = keep
        self._incidents = incidents
        self._entries: OrderedDict[str, dict[str, Entry]] = OrderedDict()

    async def record(self, entries: list[Entry]) -> None:
        for entry in entries:
            kept = self._entries.setdefault(entry.incident_id, {})
            self._entries.move_to_end(entry.incident_id)
            if entry.ts in kept:
                continue  # The same retry rule as the table: no duplicates.
            kept[entry.ts] = entry
            log.info(
                entry.message,
                extra={
                    "incident": entry.incident_id,
                    "timeline": entry.kind,
                    "ts": entry.ts,
                    "phase": entry.phase,
                    "detail": entry.detail,
                },
            )
            for ts in sorted(kept)[: max(0, len(kept) - self._keep)]:
                del kept[ts]
        while len(self._entries) > self._incidents:
            self._entries.popitem(last=False)

    async def read(self, incident_id: str) -> list[Entry]:
        kept = self._entries.get(incident_id, {})
        return [kept[ts] for ts in sorted(kept)]

    async def has(self, entry: Entry) -> bool:
        return entry.ts in self._entries.get(entry.incident_id, {})


def create_table(client: DynamoDBClient, name: str) -> None:
    """Create the timeline table (on-demand, TTL on `expires_at`) if it is missing.

    For the dev stack and tests; production tables belong to infrastructure
    code. Safe to call again on an existing table.
    """
    try:
        client.create_table(
            TableName=name,
            KeySchema=[
                {"AttributeName": "incident_id", "KeyType": "HASH"},
                {"AttributeName": "ts", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "incident_id", "AttributeType": "S"},
                {"AttributeName": "ts", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    except ClientError as error:
        if error_code(error) != "ResourceInUseException":
            raise
    client.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    # DynamoDB refuses to enable TTL twice, so look first.
    ttl = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
        client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )


def table_key(partition: str, sort: str) -> dict[str, AttributeValueTypeDef]:
    """The key of an item in the timeline table (where claims live too)."""
    return {"incident_id": attribute(partition), "ts": attribute(sort)}


def _to_item(entry: Entry, *, expires_at: int) -> dict[str, AttributeValueTypeDef]:
    # JSON first: it turns datetimes into strings, and floats into Decimals,
    # the only number type DynamoDB's serializer takes.
    data = json.loads(entry.model_dump_json(exclude_none=True), parse_float=Decimal)
    data[TTL_ATTRIBUTE] = expires_at
    return {key: attribute(value) for key, value in data.items()}


def _from_item(item: dict[str, Any]) -> Entry:
    data = plain(item)
    data.pop(TTL_ATTRIBUTE, None)
    detail = data.pop("detail", None) or {}
    if not isinstance(detail, dict):  # Not ours: keep it, under its own name.
        detail = {"detail": detail}
    detail.update({key: data.pop(key) for key in list(data) if key not in _FIELDS})
    return Entry(
        incident_id=data["incident_id"],
        ts=data["ts"],
        kind=data.get("kind", ""),
        message=data.get("message", ""),
        phase=data.get("phase"),
        detail=detail,
    )

"""The timeline: DynamoDB (against moto, through boto3) and the log fallback."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from aws_fixtures import Aws
from incident_operator.timeline import Entry
from incident_operator.timeline.dynamodb import DynamoTimeline, LogTimeline, create_table

INCIDENT = "default/checkout-5xx-1a2b3c"


def entry(ts: str, kind: str = "received", incident: str = INCIDENT, **detail: Any) -> Entry:
    return Entry(
        incident_id=incident,
        ts=ts,
        kind=kind,
        message=f"{kind} at {ts}",
        phase="Triggered",
        detail=detail,
    )


def stored_items(aws: Aws, table: str, incident: str = INCIDENT) -> list[dict[str, Any]]:
    answer = aws.client("dynamodb", record=False).query(
        TableName=table,
        KeyConditionExpression="incident_id = :id",
        ExpressionAttributeValues={":id": {"S": incident}},
    )
    return list(answer["Items"])


@pytest.fixture
def table(aws: Aws) -> str:
    return aws.timeline_table()


@pytest.fixture
def timeline(aws: Aws, table: str) -> DynamoTimeline:
    return DynamoTimeline(table, client=aws.client("dynamodb"))


async def test_recording_the_same_entries_twice_stores_them_once(
    aws: Aws, table: str, timeline: DynamoTimeline
) -> None:
    entries = [entry("2026-11-29T11:00:00.000Z#a"), entry("2026-11-29T11:00:01.000Z#b")]

    await timeline.record(entries)
    await timeline.record(entries)  # a retry after, say, a lost answer

    assert len(stored_items(aws, table)) == 2
    assert await timeline.read(INCIDENT) == entries


@pytest.mark.parametrize("kind", ["dynamodb", "log"])
async def test_has_tells_whether_an_entry_is_stored(timeline: DynamoTimeline, kind: str) -> None:
    store = timeline if kind == "dynamodb" else LogTimeline()
    stored, other = entry("2026-11-29T11:00:00.000Z#a"), entry("2026-11-29T11:00:01.000Z#b")
    await store.record([stored])
    assert await store.has(stored)
    assert not await store.has(other)
    assert not await store.has(entry(stored.ts, incident="default/other"))


async def test_a_retry_never_overwrites_the_first_copy(timeline: DynamoTimeline) -> None:
    first = entry("2026-11-29T11:00:00.000Z#a", kind="assessment")
    await timeline.record([first])

    await timeline.record([first.model_copy(update={"message": "rewritten"})])

    assert [e.message for e in await timeline.read(INCIDENT)] == [first.message]


async def test_entries_come_back_oldest_first(timeline: DynamoTimeline) -> None:
    stamps = [
        "2026-11-29T11:00:02.000Z#c",
        "2026-11-29T11:00:00.000Z#a",
        "2026-11-29T11:00:01.000Z#b",
    ]
    await timeline.record([entry(ts) for ts in stamps])

    assert [e.ts for e in await timeline.read(INCIDENT)] == sorted(stamps)


async def test_read_returns_only_that_incident(timeline: DynamoTimeline) -> None:
    await timeline.record(
        [entry("2026-11-29T11:00:00.000Z#a"), entry("2026-11-29T11:00:00.000Z#a", incident="x/y")]
    )

    assert [e.incident_id for e in await timeline.read(INCIDENT)] == [INCIDENT]


async def test_every_item_carries_an_expiry_and_the_table_expires_on_it(
    aws: Aws, table: str
) -> None:
    timeline = DynamoTimeline(table, client=aws.client("dynamodb"), ttl_days=30)
    before = int(time.time())

    await timeline.record([entry("2026-11-29T11:00:00.000Z#a")])

    (item,) = stored_items(aws, table)
    expires_at = int(item["expires_at"]["N"])
    assert before + 30 * 86400 <= expires_at <= int(time.time()) + 30 * 86400
    ttl = aws.client("dynamodb", record=False).describe_time_to_live(TableName=table)
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED"
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"


async def test_read_follows_every_page(aws: Aws, table: str) -> None:
    timeline = DynamoTimeline(table, client=aws.client("dynamodb"), page_size=2)
    entries = [entry(f"2026-11-29T11:00:{second:02d}.000Z#x") for second in range(7)]
    await timeline.record(entries)

    assert await timeline.read(INCIDENT) == entries
    assert aws.count("dynamodb.Query") >= 4  # 7 items, 2 per page


async def test_detail_survives_the_round_trip(timeline: DynamoTimeline) -> None:
    detail = {
        "confidence": 0.85,
        "count": 3,
        "ok": True,
        "nothing": None,
        "nested": {"labels": ["a", "b"], "ratio": 1.5},
    }
    await timeline.record([entry("2026-11-29T11:00:00.000Z#a", kind="assessment", **detail)])

    (read,) = await timeline.read(INCIDENT)
    assert read.detail == detail


async def test_items_of_the_serverless_agent_read_back_with_their_extra_fields(
    aws: Aws, table: str, timeline: DynamoTimeline
) -> None:
    # Same keys, attributes of its own: nothing is lost, nothing fails.
    aws.client("dynamodb", record=False).put_item(
        TableName=table,
        Item={
            "incident_id": {"S": INCIDENT},
            "ts": {"S": "2026-11-29T10:59:00Z"},
            "event": {"S": "alert_received"},
            "severity": {"S": "high"},
        },
    )

    (read,) = await timeline.read(INCIDENT)
    assert read.detail == {"event": "alert_received", "severity": "high"}


async def test_read_of_an_unknown_incident_is_empty(timeline: DynamoTimeline) -> None:
    assert await timeline.read("default/never-seen") == []


def test_creating_the_table_again_is_harmless(aws: Aws, table: str) -> None:
    create_table(aws.client("dynamodb", record=False), table)

    description = aws.client("dynamodb", record=False).describe_table(TableName=table)["Table"]
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {k["AttributeName"]: k["KeyType"] for k in description["KeySchema"]} == {
        "incident_id": "HASH",
        "ts": "RANGE",
    }


# --- without a table ---------------------------------------------------------


async def test_log_timeline_logs_each_entry_once_with_the_incident(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timeline = LogTimeline()
    first = entry("2026-11-29T11:00:00.000Z#a")
    caplog.set_level(logging.INFO, logger="incident_operator.timeline.dynamodb")

    await timeline.record([first])
    await timeline.record([first])

    lines = [r for r in caplog.records if r.name == "incident_operator.timeline.dynamodb"]
    assert [(r.getMessage(), getattr(r, "incident", None)) for r in lines] == [
        (first.message, INCIDENT)
    ]


async def test_log_timeline_reads_back_recent_entries_oldest_first() -> None:
    timeline = LogTimeline(keep=3)
    stamps = [f"2026-11-29T11:00:0{second}.000Z#x" for second in (4, 0, 3, 1, 2)]

    await timeline.record([entry(ts) for ts in stamps])

    assert [e.ts for e in await timeline.read(INCIDENT)] == sorted(stamps)[-3:]
    assert await timeline.read("default/other") == []

"""`logs`: a CloudWatch Logs Insights query over the service's log group, the
top messages by count.

The log group comes from the policy (`logGroup`, where `{service}` stands
for the service's name: `/ecs/{service}`); without one this collector
skips. The default query asks for the newest error lines; the messages are
counted here, alike once their numbers are masked ("timeout after 3012 ms"
and "... 2950 ms" are one message), because `stats count(*) by @message`
would count every distinct request id apart. A policy's own query may
return `@message` lines, or count them itself in a field named `count`.

Logs Insights is asynchronous: StartQuery, then GetQueryResults until the
query is done. A query the budget cuts short is stopped (StopQuery), so it
is not left scanning on the account's bill.

moto (the tests' AWS) runs a query's `fields`, `sort` and `limit` and
ignores `filter` and `stats`: against it the default query returns every
line of the window, so the tests write only error lines.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import timedelta
from typing import Annotated, Any

from pydantic import Field

from ...remediate.target import service_name
from .. import Found, Skip, line
from ..collector import Collector, CollectorSettings, Request, blocking, in_background

DEFAULT_QUERY = (
    "fields @timestamp, @message "
    "| filter @message like /(?i)(error|exception|fatal|panic|timeout)/ "
    "| sort @timestamp desc | limit 200"
)
_DONE = frozenset({"Complete", "Failed", "Cancelled", "Timeout", "Unknown"})
_NUMBERS = re.compile(r"\d+")


class LogsSettings(CollectorSettings):
    """The log group and the query."""

    log_group: (
        Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[.\-_/#A-Za-z0-9{}]+$")]
        | None
    ) = Field(None, description="Log group name; {service} is the service's name. Unset: off.")
    query: Annotated[str, Field(min_length=1, max_length=2048)] = Field(
        DEFAULT_QUERY, description="Logs Insights query; the default finds error lines."
    )
    window_minutes: Annotated[int, Field(ge=1, le=1440)] = Field(15, description="How far back.")
    top: Annotated[int, Field(ge=1, le=10)] = Field(5, description="Messages kept.")


def top_messages(rows: list[dict[str, str]], *, top: int) -> tuple[int, list[dict[str, Any]]]:
    """(lines counted, the `top` messages by count), alike messages counted as one."""
    counts: Counter[str] = Counter()
    example: dict[str, str] = {}
    for row in rows:
        message = row.get("@message")
        if not message:
            continue
        try:
            count = int(row.get("count", "1"))
        except ValueError:
            count = 1
        key = _NUMBERS.sub("N", " ".join(message.split()))
        counts[key] += count
        example.setdefault(key, message)
    return sum(counts.values()), [
        {"message": line(example[key], 200), "count": count}
        for key, count in counts.most_common(top)
    ]


class Logs(Collector[LogsSettings]):
    name = "logs"
    summary = "a Logs Insights query over the service's log group: the top messages by count"
    iam = ("logs:StartQuery", "logs:GetQueryResults", "logs:StopQuery")
    askable = ("query", "windowMinutes", "top")
    Settings = LogsSettings

    async def collect(self, request: Request[LogsSettings]) -> Found:
        settings = request.settings
        if settings.log_group is None:
            raise Skip("no log group (evidence.collectors.logs.logGroup)")
        spec = request.incident.spec
        group = settings.log_group.replace("{service}", service_name(spec.service))
        region = spec.service.region or spec.labels.get("region") or self.context.default_region
        logs = self.context.aws.client("logs", region)
        end = request.now
        start = end - timedelta(minutes=settings.window_minutes)
        started = await blocking(
            logs.start_query,
            logGroupName=group,
            startTime=int(start.timestamp()),
            endTime=int(end.timestamp()),
            queryString=settings.query,
        )
        query_id = started["queryId"]
        try:
            answer = await self._results(logs, query_id)
        except asyncio.CancelledError:
            # Out of budget: stop it, without waiting to hear that it stopped.
            in_background(logs.stop_query, queryId=query_id)
            raise
        status = answer.get("status")
        if status != "Complete":
            raise RuntimeError(f"the query ended {status}")
        rows = [
            {field["field"]: field.get("value", "") for field in row if "field" in field}
            for row in answer.get("results", [])
        ]
        lines, shown = top_messages(rows, top=settings.top)
        data = {
            "logGroup": group,
            "windowMinutes": settings.window_minutes,
            "lines": lines,
            "top": shown,
        }
        if not shown:
            return Found(
                summary=f"logs: no matching lines in {group} in {settings.window_minutes} min",
                data=data,
            )
        first = shown[0]
        return Found(
            summary=f"logs: {lines} matching lines in {group} in {settings.window_minutes} min; "
            f"top {first['message']!r} ({first['count']})",
            data=data,
        )

    async def _results(self, logs: Any, query_id: str) -> dict[str, Any]:
        delay = 0.2
        while True:
            answer: dict[str, Any] = await blocking(logs.get_query_results, queryId=query_id)
            if answer.get("status") in _DONE:
                return answer
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

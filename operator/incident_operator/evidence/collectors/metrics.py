"""`metrics`: the alarm's own CloudWatch metric over the last hour, as numbers.

GetMetricData for the metric the alarm watches (its namespace, name and
dimensions, as the CloudWatch alarm said them), one value per period,
summarised: how many points, min, max, first, last, and the trend (the last
third against the first). Numbers, not a picture: what a person would read
off the graph. Alarms from elsewhere (Alertmanager) name no CloudWatch
metric and are skipped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field

from .. import Found, Skip
from ..collector import Collector, CollectorSettings, Request, blocking


class MetricsSettings(CollectorSettings):
    """The window and statistic read."""

    window_minutes: Annotated[int, Field(ge=5, le=1440)] = Field(60, description="How far back.")
    period_seconds: Annotated[int, Field(ge=60, le=3600, multiple_of=60)] = Field(
        60, description="One value per this many seconds."
    )
    stat: Literal["Average", "Maximum", "Minimum", "Sum", "SampleCount", "p90", "p99"] = Field(
        "Average", description="The statistic of each period."
    )


def trend(values: list[float]) -> str:
    """rising, falling or flat: the mean of the last third against the first's."""
    if len(values) < 3:
        return "unknown"
    third = max(1, len(values) // 3)
    first = sum(values[:third]) / third
    last = sum(values[-third:]) / third
    scale = max(abs(first), abs(last), 1e-9)
    change = (last - first) / scale
    if change > 0.1:
        return "rising"
    if change < -0.1:
        return "falling"
    return "flat"


def _number(value: float) -> float:
    return round(value, 3)


class Metrics(Collector[MetricsSettings]):
    name = "metrics"
    summary = "the alarm's own CloudWatch metric over the last hour: min, max, last, trend"
    iam = ("cloudwatch:GetMetricData",)
    askable = ("windowMinutes", "periodSeconds", "stat")
    Settings = MetricsSettings

    async def collect(self, request: Request[MetricsSettings]) -> Found:
        spec = request.incident.spec
        namespace = spec.labels.get("namespace")
        metric = spec.alarm.metric
        if spec.source not in ("cloudwatch", "sns") or not namespace or not metric:
            raise Skip("the alarm names no CloudWatch metric")
        region = spec.service.region or spec.labels.get("region") or self.context.default_region
        settings = request.settings
        end = request.now
        start = end - timedelta(minutes=settings.window_minutes)
        cloudwatch = self.context.aws.client("cloudwatch", region)
        answer = await blocking(
            cloudwatch.get_metric_data,
            MetricDataQueries=[
                {
                    "Id": "m1",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": namespace,
                            "MetricName": metric,
                            "Dimensions": [
                                {"Name": k, "Value": v} for k, v in spec.alarm.dimensions.items()
                            ],
                        },
                        "Period": settings.period_seconds,
                        "Stat": settings.stat,
                    },
                    "ReturnData": True,
                }
            ],
            StartTime=start,
            EndTime=end,
            ScanBy="TimestampAscending",
            MaxDatapoints=1440,
        )
        results = answer.get("MetricDataResults", [])
        first = results[0] if results else {}
        points = sorted(zip(first.get("Timestamps", []), first.get("Values", []), strict=True))
        what = f"{namespace} {metric} ({settings.stat}, {settings.period_seconds}s)"
        data: dict[str, object] = {
            "metric": metric,
            "namespace": namespace,
            "stat": settings.stat,
            "periodSeconds": settings.period_seconds,
            "windowMinutes": settings.window_minutes,
            "points": len(points),
        }
        if not points:
            return Found(
                summary=f"metrics: no datapoints of {what} in the last "
                f"{settings.window_minutes} min",
                data=data,
            )
        values = [float(v) for _, v in points]
        data.update(
            min=_number(min(values)),
            max=_number(max(values)),
            first=_number(values[0]),
            last=_number(values[-1]),
            lastAt=points[-1][0].isoformat(timespec="seconds"),
            trend=trend(values),
        )
        return Found(
            summary=f"metrics: {what} over {settings.window_minutes} min: min {data['min']:g}, "
            f"max {data['max']:g}, last {data['last']:g}, {data['trend']} "
            f"({len(points)} points)",
            data=data,
        )

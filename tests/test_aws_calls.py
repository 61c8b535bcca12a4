"""Every AWS call of a timed client is observed once, with boto3's retries
inside the time: what the operator waited, not what one attempt took
(real boto3 against moto, through the fault-injecting proxy)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionClosedError

from aws_fixtures import Aws
from incident_operator import metrics
from incident_operator.aws_calls import timed

SECONDS = "incident_operator_aws_call_seconds"


def observed(service: str, operation: str) -> tuple[float, float]:
    """(calls, seconds) observed so far for this service and operation."""
    labels = {"service": service, "operation": operation}
    count = metrics.REGISTRY.get_sample_value(f"{SECONDS}_count", labels) or 0.0
    total = metrics.REGISTRY.get_sample_value(f"{SECONDS}_sum", labels) or 0.0
    return count, total


def client(aws: Aws, service: str, url: str, **config: Any) -> Any:
    return boto3.client(  # type: ignore[call-overload]
        service,
        endpoint_url=url,
        region_name=aws.region,
        aws_access_key_id=aws.access_key,
        aws_secret_access_key=aws.secret_key,
        config=Config(**config),
    )


def test_a_call_retried_after_a_slow_answer_is_one_call_with_the_wait_in_it(aws: Aws) -> None:
    aws.timeline_table("t")
    proxy = aws.faults(slow_seconds=1.5)
    proxy.inject("dynamodb.GetItem", "slow")
    dynamodb = timed(
        client(aws, "dynamodb", proxy.url, read_timeout=1,
               retries={"mode": "standard", "total_max_attempts": 2})
    )  # fmt: skip
    calls, seconds = observed("dynamodb", "GetItem")
    dynamodb.get_item(TableName="t", Key={"incident_id": {"S": "a"}, "ts": {"S": "b"}})
    now_calls, now_seconds = observed("dynamodb", "GetItem")
    assert now_calls - calls == 1  # two attempts, one call
    assert now_seconds - seconds >= 1.0  # the first attempt's read timeout is in it


def test_a_call_that_got_no_answer_is_observed_too(aws: Aws) -> None:
    aws.ecs_service()
    proxy = aws.faults()
    proxy.inject("ecs.DescribeServices", "lost", "lost")
    twice = {"mode": "standard", "total_max_attempts": 2}
    ecs = timed(client(aws, "ecs", proxy.url, retries=twice))
    calls, _ = observed("ecs", "DescribeServices")
    with pytest.raises(ConnectionClosedError):  # both attempts lost their answer
        ecs.describe_services(cluster="demo", services=["checkout"])
    assert observed("ecs", "DescribeServices")[0] - calls == 1


def test_a_client_timed_twice_observes_each_call_once(aws: Aws) -> None:
    aws.ecs_service()
    ecs = timed(timed(client(aws, "ecs", aws.endpoint_url)))
    calls, _ = observed("ecs", "ListServices")
    ecs.list_services(cluster="demo")
    assert observed("ecs", "ListServices")[0] - calls == 1

"""Evidence: how long gathering takes against moto, and what it adds to the prompt.

    python -m bench.evidence [--runs N]

moto in this process (its server on loopback, reached by real boto3 over
HTTP), an ECS service, an hour of its CPU metric and a few hundred log
lines; the ecs, metrics and logs collectors gathered N times (history and
kubernetes need the API server and are left out here). Prints JSON: p50,
p99 and max of one gathering, and the size of the Gemini prompt with and
without the evidence (characters; tokens need the real model's tokenizer,
about 4 characters each for this JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from incident_operator.assess.prompt import build
from incident_operator.devstack.moto import start_moto
from incident_operator.evidence.collector import READ_CONFIG, AwsReads, Context
from incident_operator.evidence.gather import gather
from incident_operator.evidence.registry import collectors
from incident_operator.models import Incident, ResponsePolicySpec
from incident_operator.policy import Policy

REGION = "us-east-1"
POLICY = Policy(
    "bench",
    ResponsePolicySpec.model_validate(
        {"assessor": {"type": "gemini"},
         "evidence": {"collectors": {"logs": {"logGroup": "/ecs/{service}"}}}}
    ),
)  # fmt: skip


def _world(session: boto3.session.Session, url: str) -> None:
    def make(service: str) -> Any:
        return session.client(service, endpoint_url=url)  # type: ignore[call-overload]

    ecs = make("ecs")
    ecs.create_cluster(clusterName="demo")
    ecs.register_task_definition(
        family="checkout", containerDefinitions=[{"name": "app", "image": "x", "memory": 128}]
    )
    ecs.create_service(
        cluster="demo", serviceName="checkout", taskDefinition="checkout", desiredCount=2
    )
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    dimensions = [
        {"Name": "ClusterName", "Value": "demo"},
        {"Name": "ServiceName", "Value": "checkout"},
    ]
    make("cloudwatch").put_metric_data(
        Namespace="AWS/ECS",
        MetricData=[
            {"MetricName": "CPUUtilization", "Dimensions": dimensions,
             "Timestamp": now - timedelta(minutes=60 - i), "Value": 20 + i * 1.3}
            for i in range(60)
        ],
    )  # fmt: skip
    logs = make("logs")
    logs.create_log_group(logGroupName="/ecs/checkout")
    logs.create_log_stream(logGroupName="/ecs/checkout", logStreamName="app")
    at = int(now.timestamp() * 1000) - 600_000
    logs.put_log_events(
        logGroupName="/ecs/checkout",
        logStreamName="app",
        logEvents=[
            {"timestamp": at + i * 1000, "message": f"ERROR upstream timeout after {i} ms"}
            for i in range(300)
        ],
    )


def _incident() -> Incident:
    return Incident.model_validate(
        {
            "metadata": {"name": "checkout-cpu", "namespace": "default", "uid": "u"},
            "spec": {
                "source": "cloudwatch",
                "fingerprint": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:checkout-cpu",
                "title": "checkout CPU above 90%",
                "severity": "high",
                "service": {"name": "checkout", "cluster": "demo", "region": REGION},
                "alarm": {"name": "checkout-cpu", "metric": "CPUUtilization",
                          "dimensions": {"ClusterName": "demo", "ServiceName": "checkout"}},
                "labels": {"namespace": "AWS/ECS", "metric": "CPUUtilization"},
            },
        }
    )  # fmt: skip


async def _measure(runs: int, context: Context) -> dict[str, Any]:
    incident = _incident()
    only = {name: cls for name, cls in collectors().items() if name in ("ecs", "metrics", "logs")}
    times: list[float] = []
    gathered = None
    for _ in range(runs):
        started = time.perf_counter()
        gathered = await gather(incident, policy=POLICY.spec.evidence, context=context, only=only)
        times.append((time.perf_counter() - started) * 1000)
    assert gathered is not None
    statuses = {f.collector: f.status for f in gathered.findings}
    times.sort()
    without = build(incident=incident.spec, policy=POLICY)
    with_evidence = build(incident=incident.spec, policy=POLICY, evidence=gathered)
    return {
        "runs": runs,
        "collectors": statuses,
        "gather_ms": {
            "p50": round(statistics.median(times), 1),
            "p99": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
            "max": round(times[-1], 1),
        },
        "prompt_chars": {
            "without_evidence": len(without.system) + len(without.user),
            "with_evidence": len(with_evidence.system) + len(with_evidence.user),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    runs = parser.parse_args().runs
    server, url, _ = start_moto()
    try:
        session = boto3.session.Session(
            aws_access_key_id="bench" + secrets.token_hex(4),
            aws_secret_access_key=secrets.token_hex(16),
            region_name=REGION,
        )
        _world(session, url)
        os.environ.pop("AWS_ENDPOINT_URL", None)
        context = Context(
            aws=AwsReads(
                make=lambda service, region: session.client(  # type: ignore[call-overload]
                    service, endpoint_url=url, config=READ_CONFIG
                )
            ),
            default_cluster="demo",
        )
        print(json.dumps(asyncio.run(_measure(runs, context)), indent=2))
    finally:
        server.stop()


if __name__ == "__main__":
    main()

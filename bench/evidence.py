"""Evidence: how long gathering takes against moto, and what it adds to the prompt.

    python -m bench --only evidence      # a section of `make bench`
    python -m bench.evidence [--runs N]  # this section alone

moto in this process (its server on loopback, reached by real boto3 over
HTTP), an ECS service, an hour of its CPU metric and a few hundred log
lines; the ecs, metrics and logs collectors gathered once (it makes the
clients), then N times more (history and kubernetes need the API server and
are left out here). Prints JSON: the first gathering's time, the p50, p99 and
max of the N others, and the size of the Gemini prompt with and without the
evidence: in characters, not tokens. Nothing here can count
tokens (the fake Gemini's counts are scripted; the model's tokenizer is
not on this machine and nothing is sent off it), so the estimate given is
Google's rule of thumb of about 4 characters a token, and says so.
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
from incident_operator.evidence import Gathered
from incident_operator.evidence.collector import READ_CONFIG, AwsReads, Context
from incident_operator.evidence.gather import gather
from incident_operator.evidence.registry import collectors
from incident_operator.models import Incident, ResponsePolicySpec
from incident_operator.policy import Policy

REGION = "us-east-1"
# Google's rule of thumb for Gemini: a token is about 4 characters.
CHARS_PER_TOKEN = 4
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

    async def once() -> tuple[float, Gathered]:
        started = time.perf_counter()
        gathered = await gather(incident, policy=POLICY.spec.evidence, context=context, only=only)
        return (time.perf_counter() - started) * 1000, gathered

    # The first gathering makes the boto3 clients (the operator keeps them
    # from one assessment to the next): reported apart, not in the percentiles.
    first, gathered = await once()
    times: list[float] = []
    for _ in range(runs):
        elapsed, gathered = await once()
        times.append(elapsed)
    statuses = {f.collector: f.status for f in gathered.findings}
    times.sort()
    without = build(incident=incident.spec, policy=POLICY)
    with_evidence = build(incident=incident.spec, policy=POLICY, evidence=gathered)
    return {
        "runs": runs,
        "collectors": statuses,
        "first_gather_ms": round(first, 1),
        "gather_ms": {
            "p50": round(statistics.median(times), 1),
            "p99": round(times[min(len(times) - 1, int(len(times) * 0.99))], 1),
            "max": round(times[-1], 1),
        },
        "prompt": _prompt_size(
            len(without.system) + len(without.user),
            len(with_evidence.system) + len(with_evidence.user),
        ),
    }


def _prompt_size(without: int, with_evidence: int) -> dict[str, Any]:
    return {
        "unit": "characters (system + user text of the deciding request)",
        "without_evidence": without,
        "with_evidence": with_evidence,
        "added_by_evidence": with_evidence - without,
        "tokens_estimated": {
            "without_evidence": round(without / CHARS_PER_TOKEN),
            "with_evidence": round(with_evidence / CHARS_PER_TOKEN),
        },
        "note": "not counted by a tokenizer: characters / 4, Google's rule of thumb",
    }


def bench_evidence(runs: int = 100) -> dict[str, Any]:
    """The section's figures, with a moto of its own (started and stopped here)."""
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
        return asyncio.run(_measure(runs, context))
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    print(json.dumps(bench_evidence(parser.parse_args().runs), indent=2))


if __name__ == "__main__":
    main()

"""Alarm to action: how long from an alarm to its ECS restart, under a steady flow.

    python -m bench --only alarm_to_action    # a section of `make bench`

New alarms are offered to the webhook open loop (each leaves on its
schedule whatever became of the earlier ones), each a new Incident, spread
over many ECS services; a ResponsePolicy restarts them without approval,
cooldown or a cap that matters; the rules assessor decides; the operator
and the webhook are real processes. Measured, per Incident, from the
moment its alarm was sent: when the restart started
(`status.remediation.startedAt`, set when UpdateService returned) and
when the Incident reached its terminal phase (`status.lastTransition.at`).

AWS is moto, in two processes of its own (DynamoDB; ECS, CloudWatch and
Logs), reached through botocore's per-service endpoint variables. Not the
moto inside the bench process: that one shares a GIL with the sender, and
serves every service one request at a time. The DynamoDB one's
transactions copy only the items they touch (`lean_transactions`: moto's
own copy the whole table). The operator's own
`incident_operator_aws_call_seconds`, read before and after, says how long
it waited on AWS per Incident, apart from the rest of its time.

    python -m bench.alarm_to_action --moto PORT   # one such moto (what the section starts)
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from typing import Any

import httpx
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from bench.rig import (
    REGION,
    Measured,
    Rig,
    alert,
    list_incidents,
    offer,
    quantile,
    say,
    timestamp,
)
from incident_operator.devstack.controlplane import _die_with_parent, free_port
from incident_operator.devstack.moto import start_moto
from incident_operator.devstack.waiting import wait_for
from incident_operator.models import API_VERSION, GROUP, VERSION
from incident_operator.timeline.dynamodb import create_table

PREFIX = "a2a"
TERMINAL = ("Resolved", "Escalated", "Ignored", "Failed")
# The AWS calls an Incident makes before its restart has started, by the
# reconcile passes that make them (reconcile/phases.py, remediate/executor.py):
#   1. Triggered -> Assessing: the transition's timeline entries (PutItem).
#   2. Assessing -> Remediating: evidence (ecs DescribeServices, cloudwatch
#      GetMetricData; logs skips with no log group), the rules assessor, the
#      transition's timeline entries (PutItem).
#   3. Remediating, Pending: the claim read (GetItem), the service observed
#      (DescribeServices), the claim (TransactWriteItems), UpdateService;
#      startedAt is taken when it returns. After it: the claim's receipt
#      (UpdateItem), this transition's timeline entries.
#   4. the next pass (the watch event of that write; else a wake-up 5 s
#      later): the rollout (DescribeServices), which moto completes at
#      once, then Resolved and its timeline entries.
# Calls of an operation that come before the start, per Incident; an
# operation not named here comes after it. The PutItems before the start
# are counted on each Incident's timeline: its entries of the transitions
# before (an entry's `ts` starts with its transition's time).
BEFORE_START = {
    ("ecs", "DescribeServices"): 2,
    ("cloudwatch", "GetMetricData"): 1,
    ("dynamodb", "GetItem"): 1,
    ("dynamodb", "TransactWriteItems"): 1,
    ("ecs", "UpdateService"): 1,
}


def bench_alarm_to_action(
    rig: Rig, *, rate: float, seconds: float, services: int, warm_up: int = 20
) -> dict[str, Any]:
    count = int(rate * seconds)
    say(f"alarm to action: {count} new alarms at {rate:g}/s over {services} ECS services")
    namespace = rig.namespace(f"bench-a2a-{rate:g}".replace(".", "-"))
    dynamodb, ecs = Moto(rig, "dynamodb"), Moto(rig, "ecs", MOTO_ECS_SERVICE_RUNNING="2")
    try:
        return _measure(rig, namespace, dynamodb, ecs, count=count, rate=rate,
                        services=services, warm_up=warm_up)  # fmt: skip
    finally:
        ecs.stop()
        dynamodb.stop()


def _measure(
    rig: Rig,
    namespace: str,
    dynamodb: Moto,
    ecs: Moto,
    *,
    count: int,
    rate: float,
    services: int,
    warm_up: int,
) -> dict[str, Any]:
    create_table(rig.session.client("dynamodb", endpoint_url=dynamodb.url), "timeline")
    _services(rig.session.client("ecs", endpoint_url=ecs.url), services)
    rig.objects.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "responsepolicies",
        {"apiVersion": API_VERSION, "kind": "ResponsePolicy", "metadata": {"name": "restart"},
         "spec": {"match": {"services": [f"{PREFIX}-*"]},
                  "rules": [{"action": "restart_service"}],
                  "approval": {"requiredFor": []},
                  "remediation": {"cooldownSeconds": 0, "maxPerHour": 100}}},
    )  # fmt: skip
    # Every AWS client of the operator to the two motos, none to the rig's.
    endpoints = {
        "AWS_ENDPOINT_URL": ecs.url,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb.url,
        "AWS_ENDPOINT_URL_ECS": ecs.url,
        "AWS_ENDPOINT_URL_CLOUDWATCH": ecs.url,
        "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": ecs.url,
    }
    url = rig.webhook(namespace)
    webhook = rig.processes[-1]
    port = free_port()
    operator = rig.operator(namespace, port=port, env=endpoints)
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    rig.measured |= {"operator": operator.pid, "moto-dynamodb": dynamodb.pid, "moto-ecs": ecs.pid}

    # Warm up: the Lease taken, the watch running, the AWS clients made.
    say(f"alarm to action: {warm_up} alarms to warm up")
    warm = [alert(f"{PREFIX}-{i % services}", f"{PREFIX}-warm-{i}", "high") for i in range(warm_up)]
    uvloop.run(offer(url, warm, rate=rate))
    _wait_terminal(rig, namespace, warm_up, timeout=300)

    bodies = [alert(f"{PREFIX}-{i % services}", f"{PREFIX}-{i}", "high") for i in range(count)]
    sent: list[float] = []
    before = _scrape(metrics_url)
    with Measured(rig, count) as measured:
        offered, _, outcomes = uvloop.run(offer(url, bodies, rate=rate, sent=sent))
        say(f"alarm to action: {count} offered at {offered:.1f}/s; waiting for the operator")
        _wait_terminal(rig, namespace, warm_up + count, timeout=900)
    time.sleep(2)  # the last transitions' timeline entries
    after = _scrape(metrics_url)
    # Done with them: an idle operator and webhook still take a little CPU.
    for process in (operator, webhook):
        process.terminate()
        process.wait(timeout=30)
    timeline = _timeline_entries(
        _scan(rig.session.client("dynamodb", endpoint_url=dynamodb.url)), namespace
    )

    sent_at = {body["incident_id"]: at for body, at in zip(bodies, sent, strict=True)}
    items = [
        item for item in list_incidents(rig, namespace) if item["spec"]["fingerprint"] in sent_at
    ]
    to_start, to_terminal, puts_before, from_first_seen = [], [], [], []
    for item in items:
        status = item["status"]
        alarm = sent_at[item["spec"]["fingerprint"]]
        started = (status.get("remediation") or {}).get("startedAt")
        if started:
            to_start.append(timestamp(started) - alarm)
            from_first_seen.append(timestamp(started) - timestamp(status["firstSeen"]))
            puts_before.append(
                sum(timestamp(ts.split("#")[0]) < timestamp(started)
                    for ts in timeline.get(item["metadata"]["name"], []))
            )  # fmt: skip
        to_terminal.append(timestamp(status["lastTransition"]["at"]) - alarm)
    kinds = Counter(kind for kind, _ in outcomes)
    aws = _aws_calls(before, after, count)
    passes = _delta(before, after, "incident_operator_reconcile_pass_seconds")
    # The AWS wait an Incident's path to its restart holds: per operation,
    # the mean time of a call times the calls made before the start.
    puts = statistics.mean(puts_before) if puts_before else 0.0
    path_ms = sum(
        figures["mean_ms"] * (BEFORE_START.get(key, 0) if key != ("dynamodb", "PutItem") else puts)
        for key, figures in aws.items()
    )
    p50 = statistics.median(to_start) if to_start else None
    return {
        "alarms": count,
        "offered_per_s": round(offered, 1),
        "services": services,
        "answered": dict(kinds),
        "incidents": len(items),
        "phases": dict(Counter(item["status"].get("phase") for item in items)),
        "all_terminal": all(item["status"].get("phase") in TERMINAL for item in items),
        "alarm_to_remediation_started_p50_s": _round(p50),
        "alarm_to_remediation_started_p99_s": _round(_q(to_start, 0.99)),
        "alarm_to_remediation_started_max_s": _round(max(to_start, default=None)),
        "alarm_to_terminal_p50_s": _round(_q(to_terminal, 0.5)),
        "alarm_to_terminal_p99_s": _round(_q(to_terminal, 0.99)),
        # status.firstSeen of a new Incident is its creationTimestamp: whole
        # seconds, so this reads up to a second longer than from the send.
        "first_seen_to_remediation_started_p50_s": _round(_q(from_first_seen, 0.5)),
        "first_seen_to_remediation_started_p99_s": _round(_q(from_first_seen, 0.99)),
        "cpu_ms_per_incident": measured.cpu_ms,
        "aws_per_incident": {f"{s} {op}": figures for (s, op), figures in sorted(aws.items())},
        "aws_ms_per_incident": round(sum(f["ms"] for f in aws.values()), 1),
        "aws_ms_before_start_per_incident": round(path_ms, 1),
        "timeline_puts_before_start_per_incident": round(puts, 2),
        "operator_own_ms_to_start_p50": round(p50 * 1000 - path_ms, 1) if p50 else None,
        "passes_per_incident": round(passes[0] / count, 2),
        "pass_mean_ms": round(passes[1] / passes[0] * 1000, 1) if passes[0] else None,
    }


class Moto:
    """moto in a process of its own (this module with --moto), on a loopback port."""

    def __init__(self, rig: Rig, name: str, **env: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with (rig.workdir / f"moto-{name}.log").open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.alarm_to_action", "--moto", str(port)],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self.pid = self.process.pid
        wait_for(f"moto for {name}", lambda: _answers(self.url), timeout=60)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def _answers(url: str) -> bool:
    try:
        httpx.get(f"{url}/moto-api/", timeout=2)
    except httpx.TransportError:
        return False
    return True


def _services(ecs: Any, services: int) -> None:
    ecs.create_cluster(clusterName="bench")
    for index in range(services):
        name = f"{PREFIX}-{index}"
        ecs.register_task_definition(
            family=name, containerDefinitions=[{"name": "app", "image": "nginx", "memory": 128}]
        )
        ecs.create_service(cluster="bench", serviceName=name, taskDefinition=name, desiredCount=2)


def _wait_terminal(rig: Rig, namespace: str, count: int, *, timeout: float) -> None:
    """Until `count` Incidents are terminal; listed every 2 s, not more: a list
    of a thousand Incidents costs the API server what the operator needs."""
    deadline = time.monotonic() + timeout
    while True:
        phases = [(i.get("status") or {}).get("phase") for i in list_incidents(rig, namespace)]
        done = sum(phase in TERMINAL for phase in phases)
        if done >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{done} of {count} Incidents terminal after {timeout:.0f} s")
        time.sleep(2)


def _timeline_entries(table: list[dict[str, Any]], namespace: str) -> dict[str, list[str]]:
    """Per Incident (by name): the `ts` of each of its timeline entries."""
    entries: dict[str, list[str]] = {}
    for item in table:
        incident = item["incident_id"]["S"]
        if incident.startswith(f"{namespace}/"):
            entries.setdefault(incident.split("/", 1)[1], []).append(item["ts"]["S"])
    return entries


def _scan(dynamodb: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName="timeline"):
        items.extend(page["Items"])
    return items


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url, timeout=30).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _delta(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    histogram: str,
) -> tuple[float, float]:
    """(count, sum) of a histogram without labels, between two scrapes."""
    key_count, key_sum = (f"{histogram}_count", ()), (f"{histogram}_sum", ())
    return (
        after.get(key_count, 0.0) - before.get(key_count, 0.0),
        after.get(key_sum, 0.0) - before.get(key_sum, 0.0),
    )


def _aws_calls(
    before: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    after: dict[tuple[str, tuple[tuple[str, str], ...]], float],
    incidents: int,
) -> dict[tuple[str, str], dict[str, float]]:
    """Per (service, operation): calls and ms waited per Incident, and ms per call."""
    calls: defaultdict[tuple[str, str], float] = defaultdict(float)
    seconds: defaultdict[tuple[str, str], float] = defaultdict(float)
    for (name, labels), value in after.items():
        if not name.startswith("incident_operator_aws_call_seconds_"):
            continue
        label = dict(labels)
        key = (label["service"], label["operation"])
        moved = value - before.get((name, labels), 0.0)
        if name.endswith("_count"):
            calls[key] += moved
        elif name.endswith("_sum"):
            seconds[key] += moved
    return {
        key: {
            "calls": round(calls[key] / incidents, 2),
            "ms": round(seconds[key] / incidents * 1000, 2),
            "mean_ms": round(seconds[key] / calls[key] * 1000, 2),
        }
        for key in calls
        if calls[key]
    }


def _q(values: list[float], q: float) -> float | None:
    return quantile(values, q) if values else None


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def lean_transactions() -> None:
    """Make moto's TransactWriteItems copy only the items it touches.

    To roll a failed transaction back, moto deep-copies each table a
    transaction names, once per item of it: the claim of a restart (three
    items) copies the whole timeline table three times. With the timeline
    entries of a thousand Incidents, that is hundreds of milliseconds of
    moto's CPU per claim, growing with the table, and moto serves one
    request at a time: the bench would measure moto's copy, not the
    operator, nor DynamoDB (whose transactions cost the same whatever the
    table holds). Here the items a transaction touches are copied first and
    put back if it fails; the outcome is the same, the cost is per item.
    """
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    stock = DynamoDBBackend.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = []
        try:
            for entry in transact_items:
                op = next(iter(entry.values()))
                table = self.get_table(op["TableName"])
                keys = op.get("Key") or {
                    name: op["Item"][name]
                    for name in (table.hash_key_attr, table.range_key_attr)
                    if name is not None
                }
                hash_key, range_key = self.get_keys_value(table, keys)
                before = table.get_item(hash_key, range_key)
                saved.append((table, hash_key, range_key, copy.deepcopy(before)))
        except Exception:
            stock(self, transact_items)  # a malformed request: moto's own answer
            return
        # The stock code's copies of whole tables become the tables themselves;
        # one request at a time (OneRequestAtATime), so nothing else copies meanwhile.
        Table.__deepcopy__ = lambda table, memo: table
        try:
            stock(self, transact_items)
        except Exception:
            for table, hash_key, range_key, before in reversed(saved):
                table.delete_item(hash_key, range_key)
                if before is not None:
                    table.put_item(before.to_json()["Attributes"])
            raise
        finally:
            del Table.__deepcopy__

    DynamoDBBackend.transact_write_items = transact_write_items


def serve_moto(port: int, *, stock: bool = False) -> None:
    """moto on `port` until SIGTERM; MOTO_ECS_SERVICE_RUNNING from the environment.
    Its transactions lean (`lean_transactions`) unless `stock`."""
    if not stock:
        lean_transactions()
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # for sigwait, in every thread
    server, url, _ = start_moto(port)
    print(f"moto on {url} in region {REGION}", flush=True)
    signal.sigwait(stop)
    server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--moto", type=int, metavar="PORT", required=True)
    parser.add_argument("--stock", action="store_true", help="moto's own transactions")
    arguments = parser.parse_args()
    serve_moto(arguments.moto, stock=arguments.stock)

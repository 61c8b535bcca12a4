"""Evidence: read-only collectors against moto (real boto3 over HTTP) and the
real API server, gathered within a budget; what the assessors do with it."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aws_fixtures import Aws
from evidence_support import checkout, evidence_context, put_cpu, store
from incident_operator.assess.factory import assess
from incident_operator.assess.rules import RulesAssessor
from incident_operator.evidence import Found, Gathered, Skip, registry, shown
from incident_operator.evidence.collector import Collector, CollectorSettings, Request
from incident_operator.evidence.collectors.logs import top_messages
from incident_operator.evidence.collectors.metrics import trend
from incident_operator.evidence.gather import gather
from incident_operator.evidence.registry import collectors
from incident_operator.models import Assessment, EvidencePolicy, ResponsePolicySpec
from incident_operator.policy import Policy
from operator_support import wait_for

REPO = Path(__file__).resolve().parent.parent

ECS = {"ecs": collectors()["ecs"]}
METRICS = {"metrics": collectors()["metrics"]}
HISTORY = {"history": collectors()["history"]}


def policy(**evidence: Any) -> EvidencePolicy:
    return EvidencePolicy.model_validate(evidence)


# --- ECS ----------------------------------------------------------------------


async def test_ecs_evidence_is_the_services_deployments(aws: Aws) -> None:
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    primary = aws.primary()

    found = await gather(checkout(), policy=policy(), context=evidence_context(aws), only=ECS)

    [finding] = found.findings
    assert finding.status == "ok", finding.summary
    assert "deployed " in finding.summary and "(checkout:1, rollout COMPLETED, 2/2 running)" in (
        finding.summary
    )
    assert finding.found is not None
    [deployment] = finding.found.data["deployments"]
    assert (deployment["status"], deployment["taskDefinition"]) == ("PRIMARY", "checkout:1")
    assert (deployment["running"], deployment["desired"]) == (2, 2)
    assert found.deployed_at == primary["createdAt"].astimezone(UTC)
    # moto records no service events; real ECS does, and they are kept the same way.
    assert finding.found.data["events"] == []
    assert aws.count("ecs.DescribeServices") == 1


async def test_ecs_evidence_skips_what_is_not_an_ecs_service(aws: Aws) -> None:
    deployment = checkout(service={"name": "web", "namespace": "shop", "platform": "kubernetes"})

    found = await gather(deployment, policy=policy(), context=evidence_context(aws), only=ECS)

    assert [(f.status, f.summary) for f in found.findings] == [
        ("skipped", "not an ECS service (platform kubernetes)")
    ]
    assert aws.calls == []


async def test_a_refused_read_is_recorded_and_does_not_block(aws: Aws) -> None:
    aws.ecs_service()
    denied = evidence_context(aws)
    denied.aws._made[("ecs", "us-east-1")] = aws.client("ecs", deny=["DescribeServices"])

    found = await gather(checkout(), policy=policy(), context=denied, only=ECS)

    [finding] = found.findings
    assert finding.status == "failed"
    assert "AccessDeniedException" in finding.summary
    assert "check the operator's IAM role" in finding.summary
    assert found.deployed_at is None


# --- CloudWatch metrics ------------------------------------------------------------


async def test_the_alarms_metric_is_summarised_as_numbers(aws: Aws) -> None:
    put_cpu(aws, [20, 22, 25, 40, 61, 78, 88, 93, 97])

    found = await gather(checkout(), policy=policy(), context=evidence_context(aws), only=METRICS)

    [finding] = found.findings
    assert finding.status == "ok", finding.summary
    assert finding.found is not None
    data = finding.found.data
    assert (data["points"], data["min"], data["max"], data["first"], data["last"]) == (
        9, 20, 97, 20, 97,
    )  # fmt: skip
    assert data["trend"] == "rising"
    assert finding.summary == (
        "metrics: AWS/ECS CPUUtilization (Average, 60s) over 60 min: "
        "min 20, max 97, last 97, rising (9 points)"
    )
    assert aws.count("cloudwatch.GetMetricData") == 1


async def test_an_alarm_without_data_says_so(aws: Aws) -> None:
    found = await gather(checkout(), policy=policy(), context=evidence_context(aws), only=METRICS)

    [finding] = found.findings
    assert finding.status == "ok"
    assert finding.summary.endswith("no datapoints of AWS/ECS CPUUtilization (Average, 60s) "
                                    "in the last 60 min")  # fmt: skip


async def test_an_alarm_with_no_cloudwatch_metric_is_skipped(aws: Aws) -> None:
    alertmanager = checkout(source="alertmanager", labels={"alertname": "HighCPU"})

    found = await gather(alertmanager, policy=policy(), context=evidence_context(aws), only=METRICS)

    assert [f.status for f in found.findings] == ["skipped"]
    assert aws.calls == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, 2, 3, 4, 5, 6], "rising"),
        ([90, 80, 70, 20, 10, 5], "falling"),
        ([50, 52, 49, 51, 50, 50], "flat"),
        ([3, 4], "unknown"),
        ([0, 0, 0, 0], "flat"),
    ],
)
def test_the_trend_compares_the_last_third_with_the_first(
    values: list[float], expected: str
) -> None:
    assert trend(values) == expected


# --- history ------------------------------------------------------------------------


async def test_history_lists_earlier_incidents_of_the_same_alarm_and_their_outcome(
    api: client.ApiClient, namespace: str, crds_installed: None
) -> None:
    restarted = {
        "phase": "Resolved",
        "assessment": {"decision": "SAFE", "action": "restart_service", "message": "m",
                       "confidence": 1, "assessor": "rules"},
        "remediation": {"action": "restart_service", "target": "us-east-1/demo/checkout",
                        "result": "Succeeded"},
    }  # fmt: skip
    escalated = {
        "phase": "Escalated",
        "assessment": {"decision": "ESCALATE", "action": "notify_team", "message": "m",
                       "confidence": 0, "assessor": "rules"},
    }  # fmt: skip
    for status in (restarted, restarted, escalated):
        store(api, namespace, checkout(namespace=namespace), **status)
    # Not the same alarm, not the same service: not history of this one.
    other_alarm = {**checkout().spec.alarm.to_api(), "name": "checkout-latency"}
    store(api, namespace, checkout(namespace=namespace, alarm=other_alarm))
    orders = {"name": "orders", "cluster": "demo", "region": "us-east-1"}
    store(api, namespace, checkout(namespace=namespace, service=orders))
    now = store(api, namespace, checkout(namespace=namespace))

    found = await gather(now, policy=policy(), context=evidence_context(api=api), only=HISTORY)

    [finding] = found.findings
    assert finding.status == "ok", finding.summary
    assert finding.summary == (
        "history: 3 earlier in 168h: SAFE restart_service, restart_service Succeeded -> "
        "Resolved (2), ESCALATE notify_team -> Escalated (1)"
    )
    assert finding.found is not None
    assert finding.found.data["count"] == 3
    assert {i["result"] for i in finding.found.data["latest"]} == {"Succeeded", None}
    assert found.recurrences() == 3
    assert found.recurrences(timedelta(hours=24)) == 3
    assert found.status().recurrences == 3


async def test_history_of_a_first_incident_is_empty(
    api: client.ApiClient, namespace: str, crds_installed: None
) -> None:
    first = store(api, namespace, checkout(namespace=namespace))

    found = await gather(first, policy=policy(), context=evidence_context(api=api), only=HISTORY)

    assert [f.summary for f in found.findings] == [
        "history: no earlier Incident of this alarm in 168h"
    ]
    assert found.recurrences() == 0


# --- the budget ------------------------------------------------------------------------


class Stuck(Collector[CollectorSettings]):
    """A collector that never answers (a hung endpoint)."""

    name = "stuck"
    summary = "never answers"
    Settings = CollectorSettings

    async def collect(self, request: Request[CollectorSettings]) -> Found:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class Broken(Collector[CollectorSettings]):
    name = "broken"
    summary = "raises"
    Settings = CollectorSettings

    async def collect(self, request: Request[CollectorSettings]) -> Found:
        raise RuntimeError("the collector has a bug")


class NotHere(Collector[CollectorSettings]):
    name = "nothere"
    summary = "does not apply"
    Settings = CollectorSettings

    async def collect(self, request: Request[CollectorSettings]) -> Found:
        raise Skip("no log group configured")


async def test_a_slow_aws_call_times_out_within_the_budget_and_the_rest_is_kept(
    aws: Aws,
) -> None:
    aws.ecs_service(running=2)
    put_cpu(aws, [50, 50, 50])
    proxy = aws.faults(slow_seconds=8)
    proxy.inject("ecs.DescribeServices", "slow", forever=True)
    context = evidence_context(aws)
    context.aws._made[("ecs", "us-east-1")] = _client_at(aws, "ecs", proxy.url)

    started = time.monotonic()
    found = await gather(
        checkout(), policy=policy(budgetSeconds=1), context=context, only={**ECS, **METRICS}
    )
    elapsed = time.monotonic() - started

    assert elapsed < 1.5
    statuses = {f.collector: (f.status, f.summary) for f in found.findings}
    assert statuses["ecs"] == ("timedOut", "no answer within the budget of 1 s")
    assert statuses["metrics"][0] == "ok"
    assert found.budget_ms == 1000 and 1000 <= found.elapsed_ms < 1500


def _client_at(aws: Aws, service: str, url: str) -> Any:
    saved = aws.endpoint_url
    aws.endpoint_url = url
    try:
        return aws.client(service)
    finally:
        aws.endpoint_url = saved


async def test_a_failure_a_skip_and_a_hang_are_recorded_and_do_not_block() -> None:
    only = {"broken": Broken, "nothere": NotHere, "stuck": Stuck}

    started = time.monotonic()
    found = await gather(
        checkout(), policy=policy(budgetSeconds=1), context=evidence_context(), only=only
    )

    assert time.monotonic() - started < 1.5
    assert [(f.collector, f.status, f.summary) for f in found.findings] == [
        ("broken", "failed", "RuntimeError: the collector has a bug"),
        ("nothere", "skipped", "no log group configured"),
        ("stuck", "timedOut", "no answer within the budget of 1 s"),
    ]
    # Nobody looked at deployments or history: the facts are unknown, not "none".
    assert found.deployed_at is None and found.recurrences() is None


async def test_a_collector_the_policy_turns_off_is_not_asked(aws: Aws) -> None:
    aws.ecs_service()
    off = policy(collectors={"ecs": {"enabled": False}})

    found = await gather(checkout(), policy=off, context=evidence_context(aws), only=ECS)

    assert [(f.status, f.summary) for f in found.findings] == [
        ("skipped", "disabled by the policy")
    ]
    assert aws.calls == []


def test_collector_settings_are_checked_in_the_policy() -> None:
    with pytest.raises(ValueError, match=r"evidence\.collectors\.logz: no such collector"):
        ResponsePolicySpec.model_validate({"evidence": {"collectors": {"logz": {}}}})
    with pytest.raises(ValueError, match="less than or equal to 20"):
        ResponsePolicySpec.model_validate({"evidence": {"collectors": {"ecs": {"events": 50}}}})
    with pytest.raises(ValueError, match="budgetSeconds"):
        ResponsePolicySpec.model_validate({"evidence": {"budgetSeconds": 600}})


# --- what the assessment keeps, and the rules ------------------------------------------


def rules(*rules: dict[str, Any]) -> Policy:
    return Policy(
        "checkout",
        ResponsePolicySpec.model_validate(
            {"rules": list(rules), "allowedActions": ["restart_service", "notify_team"]}
        ),
    )


DEPLOY_THEN_RESTART = {"when": {"deployedWithin": "30m"}, "action": "restart_service"}
AGAIN_AND_AGAIN = {
    "when": {"recurrences": {"atLeast": 3, "within": "24h"}},
    "action": "notify_team",
    "decision": "ESCALATE",
}
OTHERWISE = {"action": "notify_team"}


async def test_a_rule_acts_on_a_deploy_seen_in_ecs(aws: Aws) -> None:
    aws.ecs_service(running=2)
    chosen = rules(AGAIN_AND_AGAIN, DEPLOY_THEN_RESTART, OTHERWISE)
    incident = checkout()
    seen = await gather(incident, policy=policy(), context=evidence_context(aws), only=ECS)

    result = await assess(
        incident=incident.spec, policy=chosen, assessor=RulesAssessor(), evidence=seen
    )

    assert (result.decision, result.action) == ("SAFE", "restart_service")
    assert result.message.startswith("rule 2 (severity any, alarm any, deployed 0m ago)")
    # The evidence it was made with is kept with it, compact.
    assert result.evidence is not None
    [item] = result.evidence.items
    assert (item.collector, item.status) == ("ecs", "ok")
    assert result.evidence.deployed_at == seen.deployed_at
    Assessment.model_validate(result.to_api())  # what the API server will be sent


async def test_a_rule_whose_evidence_is_missing_does_not_match(aws: Aws) -> None:
    # No ECS service: the collector sees none, so nothing was deployed that it knows of.
    chosen = rules(DEPLOY_THEN_RESTART, OTHERWISE)
    incident = checkout()
    seen = await gather(incident, policy=policy(), context=evidence_context(aws), only=ECS)

    result = await assess(
        incident=incident.spec, policy=chosen, assessor=RulesAssessor(), evidence=seen
    )
    without = await assess(incident=incident.spec, policy=chosen, assessor=RulesAssessor())

    assert result.action == without.action == "notify_team"
    assert result.message.startswith("rule 2 ")
    assert without.evidence is None


async def test_a_recurring_alarm_escalates(
    api: client.ApiClient, namespace: str, crds_installed: None
) -> None:
    for _ in range(3):
        store(api, namespace, checkout(namespace=namespace))
    now = store(api, namespace, checkout(namespace=namespace))
    chosen = rules(AGAIN_AND_AGAIN, DEPLOY_THEN_RESTART, OTHERWISE)
    seen = await gather(now, policy=policy(), context=evidence_context(api=api), only=HISTORY)

    result = await assess(incident=now.spec, policy=chosen, assessor=RulesAssessor(), evidence=seen)

    assert (result.decision, result.action) == ("ESCALATE", "notify_team")
    assert "3 earlier in 24h" in result.message
    assert result.evidence is not None and result.evidence.recurrences == 3


def test_a_conditional_rule_is_not_a_catch_all() -> None:
    # Before `when`, a rule naming no severity nor alarm had to be the last one.
    rules(DEPLOY_THEN_RESTART, OTHERWISE)
    with pytest.raises(ValueError, match="matches everything"):
        rules(OTHERWISE, DEPLOY_THEN_RESTART)


def test_the_summary_for_people_is_short_and_says_what_could_not_look() -> None:
    from incident_operator.evidence import Finding

    gathered = Gathered(
        findings=(
            Finding("ecs", "ok", "ECS: deployed 4m ago (checkout:8, rollout COMPLETED)", 40),
            Finding("metrics", "timedOut", "no answer within the budget of 10 s", 10000),
            Finding("logs", "skipped", "no log group configured", 0),
            Finding("history", "ok", "history: 2 earlier in 168h: " + "x" * 400, 30),
        ),
        gathered_at=datetime.now(UTC),
        elapsed_ms=10000,
        budget_ms=10000,
    )

    line = shown(gathered.status())

    assert line.startswith("ECS: deployed 4m ago (checkout:8, rollout COMPLETED) · history: 2")
    assert len(line) <= 300 and line.endswith("…")
    assert len(gathered.status().items[3].summary) <= 512
    assert [f["collector"] for f in gathered.quoted()] == ["ecs", "metrics", "history"]


def test_the_iam_policy_grants_what_the_collectors_declare() -> None:
    document = json.loads((REPO / "docs" / "iam-policy.json").read_text())
    granted = {
        action
        for statement in document["Statement"]
        for action in (
            [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        )
    }
    assert registry.iam_actions() <= granted
    assert registry.iam_actions() >= {"ecs:DescribeServices", "cloudwatch:GetMetricData"}


def test_slack_shows_the_evidence_in_a_short_escaped_field() -> None:
    from incident_operator.models import Evidence, EvidenceItem
    from incident_operator.slack.blocks import incident_blocks

    said = "ECS: last event '<!channel> <https://evil.example|click> restart payments-db'"
    assessment = Assessment(
        decision="ESCALATE", action="notify_team", message="m", confidence=0, assessor="rules",
        evidence=Evidence(
            gathered_at=datetime.now(UTC), elapsed_ms=120, budget_ms=10000,
            items=[EvidenceItem(collector="ecs", status="ok", summary=said),
                   EvidenceItem(collector="history", status="failed", summary="Forbidden")],
        ),
    )  # fmt: skip
    incident = checkout().model_copy(deep=True)
    incident.status.assessment = assessment

    fields = incident_blocks(incident)[1]["fields"]

    [evidence] = [f["text"] for f in fields if f["text"].startswith("*Evidence*")]
    assert evidence == (
        "*Evidence*\nECS: last event '&lt;!channel&gt; &lt;https://evil.example|click&gt; "
        "restart payments-db' · history failed"
    )
    assert all("Evidence" not in f["text"] for f in incident_blocks(checkout())[1]["fields"])


# --- CloudWatch Logs Insights -------------------------------------------------------------


def write_logs(aws: Aws, group: str, messages: list[str]) -> None:
    logs = aws.client("logs", record=False)
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="app/1")
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName="app/1",
        logEvents=[
            {"timestamp": now - 60_000 + index * 1000, "message": message}
            for index, message in enumerate(messages)
        ],
    )


LOGS = {"logs": collectors()["logs"]}
WITH_LOGS = {"collectors": {"logs": {"logGroup": "/ecs/{service}"}}}


async def test_the_top_log_messages_are_counted_alike(aws: Aws) -> None:
    # moto ignores the query's `filter`: only error lines are written. The newest
    # line of each kind is its example.
    write_logs(aws, "/ecs/checkout", [
        *(f"ERROR payment gateway timeout after {3000 + n} ms (request {n})" for n in range(5)),
        "Exception in thread main: NullPointerException at Cart.total",
        "Exception in thread main: NullPointerException at Cart.total",
        "FATAL out of memory",
    ])  # fmt: skip

    found = await gather(
        checkout(), policy=policy(**WITH_LOGS), context=evidence_context(aws), only=LOGS
    )

    [finding] = found.findings
    assert finding.status == "ok", finding.summary
    assert finding.found is not None
    assert finding.found.data["lines"] == 8
    assert finding.found.data["top"] == [
        {"message": "ERROR payment gateway timeout after 3004 ms (request 4)", "count": 5},
        {"message": "Exception in thread main: NullPointerException at Cart.total", "count": 2},
        {"message": "FATAL out of memory", "count": 1},
    ]
    assert finding.summary == (
        "logs: 8 matching lines in /ecs/checkout in 15 min; top "
        "'ERROR payment gateway timeout after 3004 ms (request 4)' (5)"
    )
    assert aws.calls[:2] == ["cloudwatch-logs.StartQuery", "cloudwatch-logs.GetQueryResults"], (
        aws.calls
    )


async def test_without_a_log_group_the_logs_are_not_read(aws: Aws) -> None:
    found = await gather(checkout(), policy=policy(), context=evidence_context(aws), only=LOGS)

    assert [(f.status, f.summary) for f in found.findings] == [
        ("skipped", "no log group (evidence.collectors.logs.logGroup)")
    ]
    assert aws.calls == []


async def test_a_missing_log_group_is_a_recorded_failure(aws: Aws) -> None:
    found = await gather(
        checkout(), policy=policy(**WITH_LOGS), context=evidence_context(aws), only=LOGS
    )

    [finding] = found.findings
    assert finding.status == "failed"
    assert "ResourceNotFoundException" in finding.summary


def test_a_policys_stats_query_may_count_itself() -> None:
    rows = [{"@message": "ERROR a 1", "count": "7"}, {"@message": "ERROR a 2", "count": "3"},
            {"@message": "WARN b", "count": "x"}, {"count": "4"}]  # fmt: skip

    assert top_messages(rows, top=1) == (11, [{"message": "ERROR a 1", "count": 10}])


async def test_a_query_the_budget_cuts_short_is_stopped(aws: Aws) -> None:
    write_logs(aws, "/ecs/checkout", ["ERROR slow"])
    proxy = aws.faults(slow_seconds=8)
    proxy.inject("logs.GetQueryResults", "slow", forever=True)
    context = evidence_context(aws)
    context.aws._made[("logs", "us-east-1")] = _client_at(aws, "logs", proxy.url)

    found = await gather(
        checkout(), policy=policy(budgetSeconds=1, **WITH_LOGS), context=context, only=LOGS
    )

    assert [(f.status, f.summary) for f in found.findings] == [
        ("timedOut", "no answer within the budget of 1 s")
    ]
    # Not left scanning (and billing) after the assessment went on without it. (moto
    # has no StopQuery: it answers 500, and botocore tries once more; nobody waits.)
    wait_for("the query to be stopped", lambda: aws.server.served_count("StopQuery") >= 1)


async def test_a_fresh_deploy_can_be_rolled_back_by_rule(aws: Aws) -> None:
    aws.ecs_service(running=2)
    chosen = Policy(
        "checkout",
        ResponsePolicySpec.model_validate(
            {"rules": [{"when": {"deployedWithin": "30m"}, "action": "rollback_service"},
                       {"action": "notify_team"}],
             "allowedActions": ["rollback_service", "notify_team"]}
        ),
    )  # fmt: skip
    incident = checkout()
    seen = await gather(incident, policy=policy(), context=evidence_context(aws), only=ECS)

    result = await assess(
        incident=incident.spec, policy=chosen, assessor=RulesAssessor(), evidence=seen
    )

    assert (result.decision, result.action) == ("SAFE", "rollback_service")


async def test_a_service_of_another_account_is_not_read_as_ours(aws: Aws) -> None:
    aws.ecs_service()
    arn = "arn:aws:ecs:us-east-1:210987654321:service/demo/checkout"  # not moto's account
    elsewhere = checkout(service={"name": arn, "cluster": "demo", "region": "us-east-1"})

    found = await gather(elsewhere, policy=policy(), context=evidence_context(aws), only=ECS)

    [finding] = found.findings
    assert finding.status == "skipped"
    assert finding.summary.startswith("the alarm names us-east-1/demo/checkout in account ")
    assert found.deployed_at is None

"""Escalation chains end to end: a real operator process and API server, the
fake Slack and PagerDuty, moto for SES and DynamoDB. An escalated Incident
nobody acknowledges takes its policy's steps on time, each once (a Slack
user group mentioned, an email list written to, a second PagerDuty service
paged); an acknowledgement stops the chain; the resolution resolves every
page."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aws_fixtures import Aws
from fakes.pagerduty import FakePagerDuty
from fakes.slack import FakeSlack
from incident_operator.models import GROUP, VERSION
from operator_support import OperatorProcess, create_policy, get_incident, operator_env, wait_for
from test_operator import raise_alarm, wait_phase

pytestmark = pytest.mark.usefixtures("crds_installed")

CHANNEL = "C0ESCALATE"
SENDER = "incidents@example.com"
ALARM = "checkout-latency-warning"
CHAIN = {
    "match": {"services": ["checkout"]},
    "rules": [{"action": "notify_team", "decision": "ESCALATE"}],
    "allowedActions": ["notify_team"],
    "notify": {"email": {"recipients": ["oncall@example.com"]}},
    "escalation": {
        "steps": [
            {"after": "2s", "slackUserGroup": "S0ONCALL"},
            {"after": "2s", "email": ["lead@example.com"], "pagerduty": "secondary"},
        ]
    },
}


def emails_sent(aws: Aws) -> int:
    return int(aws.client("ses", record=False).get_send_quota()["SentLast24Hours"])


def run(
    namespace: str, kubeconfig: Path, aws: Aws, slack: FakeSlack, pagerduty: FakePagerDuty,
    secondary: str, logs: Path,
) -> OperatorProcess:  # fmt: skip
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    aws.client("ses", record=False).verify_email_identity(EmailAddress=SENDER)
    env = operator_env(
        kubeconfig, aws,
        SLACK_BOT_TOKEN=slack.token, SLACK_API_URL=slack.api_url, SLACK_CHANNEL=CHANNEL,
        SES_SENDER=SENDER, EMAIL_RECIPIENT="oncall@example.com",
        PAGERDUTY_ROUTING_KEY=pagerduty.routing_key, PAGERDUTY_EVENTS_URL=pagerduty.events_url,
        PAGERDUTY_ROUTING_KEYS=f"secondary={secondary}",
    )  # fmt: skip
    return OperatorProcess(namespace=namespace, env=env, log_dir=logs).start()


def steps(incident: dict[str, Any]) -> list[dict[str, Any]]:
    return list((incident["status"].get("escalation") or {}).get("steps", []))


async def test_an_unacknowledged_escalation_takes_each_step_once_and_resolution_ends_the_pages(
    api: client.ApiClient, namespace: str, kubeconfig: Path, aws: Aws, slack: FakeSlack,
    pagerduty: FakePagerDuty, tmp_path: Path,
) -> None:  # fmt: skip
    secondary = secrets.token_hex(16)
    pagerduty.routing_keys.add(secondary)
    create_policy(api, namespace, "checkout-chain", CHAIN)
    operator = run(namespace, kubeconfig, aws, slack, pagerduty, secondary, tmp_path)
    try:
        name = await raise_alarm(api, namespace, alarm=ALARM)
        escalated = wait_phase(api, namespace, name, "Escalated")
        since = escalated["status"]["escalation"]["since"]
        wait_for("both steps", lambda: len(steps(get_incident(api, namespace, name))) == 2,
                 timeout=30)  # fmt: skip
        incident = get_incident(api, namespace, name)
        first, second = steps(incident)
        assert (first["number"], first["slackUserGroup"]) == (1, "S0ONCALL")
        assert (second["number"], second["email"], second["pagerduty"]) == (
            2, ["lead@example.com"], "secondary"
        )  # fmt: skip
        assert first["at"] >= since and second["at"] >= first["at"]
        # Slack: one message; the first step mentions the user group in its thread.
        [message] = slack.top_level(CHANNEL)
        mentions = [m for m in slack.thread(message) if "<!subteam^S0ONCALL>" in m.text]
        assert len(mentions) == 1 and "escalation step 1 of 2" in mentions[0].text
        # Email: the escalation's, then the second step's.
        wait_for("the step's email", lambda: emails_sent(aws) == 2)
        # PagerDuty: the escalation paged the default service, the second step the secondary.
        wait_for("the secondary page", lambda: len(pagerduty.events("trigger")) == 2)
        routing = sorted(event["routing_key"] for event in pagerduty.events("trigger"))
        assert routing == sorted([pagerduty.routing_key, secondary])
        time.sleep(3)  # the chain is done: no third step
        assert len(steps(get_incident(api, namespace, name))) == 2
        assert emails_sent(aws) == 2 and len(pagerduty.events("trigger")) == 2

        await raise_alarm(api, namespace, alarm=ALARM, state="OK")
        wait_phase(api, namespace, name, "Resolved")
        wait_for("both pages resolved", lambda: len(pagerduty.events("resolve")) == 2)
        assert sorted(e["routing_key"] for e in pagerduty.events("resolve")) == routing
    finally:
        operator.stop()


async def test_an_acknowledgement_stops_the_chain(
    api: client.ApiClient, namespace: str, kubeconfig: Path, aws: Aws, slack: FakeSlack,
    pagerduty: FakePagerDuty, tmp_path: Path,
) -> None:  # fmt: skip
    secondary = secrets.token_hex(16)
    pagerduty.routing_keys.add(secondary)
    slow = {**CHAIN, "escalation": {"steps": [{"after": "3s", "slackUserGroup": "S0ONCALL"}]}}
    create_policy(api, namespace, "checkout-chain", slow)
    operator = run(namespace, kubeconfig, aws, slack, pagerduty, secondary, tmp_path)
    try:
        name = await raise_alarm(api, namespace, alarm=ALARM)
        wait_phase(api, namespace, name, "Escalated")
        # Someone takes it before the first step (`kubectl incident ack` writes this).
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "incidents", name,
            {"status": {"acknowledgement": {"by": "alice", "at": "2026-11-30T12:00:00Z",
                                            "via": "kubectl"}}},
        )  # fmt: skip
        time.sleep(5)
        incident = get_incident(api, namespace, name)
        assert steps(incident) == []
        [message] = slack.top_level(CHANNEL)
        assert not [m for m in slack.thread(message) if "subteam" in m.text]
    finally:
        operator.stop()

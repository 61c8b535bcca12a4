"""A storm grouped into one Incident is one conversation: a real operator and
API server, two webhook replicas, the fake Slack and Jira, moto for ECS and SES."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aws_fixtures import Aws
from fakes.jira import FakeJira
from fakes.slack import FakeSlack
from operator_support import OperatorProcess, channels_env, create_policy, operator_env
from test_operator import wait_phase
from webhook_support import eventbridge_alarm, incidents, new_token, webhook

pytestmark = pytest.mark.usefixtures("crds_installed")

CHANNEL = "C0STORMS"
SENDER = "incidents@example.com"
STORM = 50


@pytest.fixture
def world(aws: Aws) -> Aws:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    aws.client("ses", record=False).verify_email_identity(EmailAddress=SENDER)
    return aws


async def storm(api: client.ApiClient, namespace: str) -> str:
    """Fifty alarms of cluster demo at once, over two webhook replicas."""
    replicas = [webhook(api, namespace, token=new_token(), grouping=True) for _ in range(2)]
    try:
        answers = await asyncio.gather(
            *(
                replicas[i % 2].post(
                    "/alerts/cloudwatch",
                    json=eventbridge_alarm(
                        f"checkout-cpu-sev2-{i}", cluster="demo", region="us-east-1"
                    ),
                )
                for i in range(STORM)
            )
        )
    finally:
        for replica in replicas:
            await replica.aclose()
    assert [answer.status_code for answer in answers] == [200] * STORM
    [name] = {answer.json()["incidents"][0]["name"] for answer in answers}
    return str(name)


def run_operator(
    namespace: str, kubeconfig: Path, world: Aws, slack: FakeSlack, jira: FakeJira, logs: Path
) -> OperatorProcess:
    env = operator_env(
        kubeconfig, world, **channels_env(slack, jira, channel=CHANNEL, sender=SENDER)
    )
    return OperatorProcess(namespace=namespace, env=env, log_dir=logs).start()


@pytest.mark.parametrize(
    ("rule", "phase"),
    [
        ({"action": "notify_team", "decision": "ESCALATE"}, "Escalated"),
        ({"action": "restart_service"}, "Resolved"),
    ],
    ids=["escalated", "restarted"],
)
async def test_a_storm_is_one_incident_one_message_one_issue_and_one_action_at_most(
    api: client.ApiClient, namespace: str, kubeconfig: Path, world: Aws, slack: FakeSlack,
    jira_server: FakeJira, tmp_path: Path, rule: dict[str, Any], phase: str,
) -> None:  # fmt: skip
    create_policy(api, namespace, "storms", {
        "match": {"services": ["checkout"]},
        "grouping": {"by": ["cluster"], "window": "5m"},
        "rules": [rule],
        "approval": {"requiredFor": []},
        "notify": {"jira": {"onNotifyTeam": True}},
    })  # fmt: skip
    name = await storm(api, namespace)
    operator = run_operator(namespace, kubeconfig, world, slack, jira_server, tmp_path)
    try:
        incident = wait_phase(api, namespace, name, phase)
    finally:
        operator.stop()
    assert len(incidents(api, namespace)) == 1
    status = incident["status"]
    assert status["alertCount"] == STORM and len(status["alerts"]) == STORM
    [message] = slack.top_level(CHANNEL)
    assert f"{STORM} alerts" in message.shown
    assert world.server.served_count("UpdateService") == (1 if phase == "Resolved" else 0)
    if phase == "Escalated":
        assert jira_server.created() == 1 and len(jira_server.issues) == 1
    assert status["assessment"]["severity"] == "high"

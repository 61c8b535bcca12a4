"""Notifications end to end: a real operator process and API server, the fake
Slack and Jira servers, moto for ECS, DynamoDB and SES, and the webhook app
receiving signed button clicks."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aws_fixtures import Aws
from fakes.jira import FakeJira
from fakes.slack import FakeSlack, Message
from incident_operator.models import GROUP, VERSION
from operator_support import (
    OperatorProcess,
    channels_env,
    create_policy,
    get_incident,
    operator_env,
    phase_of,
)
from slack_signing import click, sign
from test_operator import AUTO_RESTART, raise_alarm, wait_phase
from webhook_support import new_token, webhook

pytestmark = pytest.mark.usefixtures("crds_installed")

CHANNEL = "C0INCIDENTS"
SENDER = "incidents@example.com"


@pytest.fixture
def world(aws: Aws) -> Aws:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    aws.client("ses", record=False).verify_email_identity(EmailAddress=SENDER)
    return aws


@pytest.fixture
def env(kubeconfig: Path, world: Aws, slack: FakeSlack, jira_server: FakeJira) -> dict[str, str]:
    return operator_env(
        kubeconfig,
        world,
        **channels_env(slack, jira_server, channel=CHANNEL, sender=SENDER),
        NOTIFY_RETRY_ATTEMPTS="2",
    )


@pytest.fixture
def operator(namespace: str, env: dict[str, str], tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        yield process
    finally:
        process.stop()


def emails_sent(aws: Aws) -> int:
    return int(aws.client("ses", record=False).get_send_quota()["SentLast24Hours"])


def conditions(incident: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {
        c["type"]: (c["status"], c["reason"], c.get("message", ""))
        for c in incident["status"]["conditions"]
    }


def the_message(slack: FakeSlack) -> Message:
    [message] = slack.top_level(CHANNEL)
    return message


def assert_replies_unique(slack: FakeSlack, message: Message) -> None:
    keys = [m.metadata["event_payload"]["record"] for m in slack.thread(message) if m.metadata]
    assert len(keys) == len(set(keys)), keys


async def click_button(
    api: client.ApiClient, namespace: str, slack: FakeSlack, secret: str, action: str,
    name: str, ts: str, user: str = "U0ALICE",
) -> list[str]:  # fmt: skip
    url = slack.response_url()
    body = click(action, f"{namespace}/{name}", user=user, response_url=url, message_ts=ts)
    async with webhook(
        api, namespace, token=new_token(), slack_signing_secret=secret,
        slack_bot_token=slack.token, slack_api_url=slack.api_url,
    ) as http:  # fmt: skip
        answer = await http.post("/slack/actions", content=body, headers=sign(secret, body))
    assert answer.status_code == 200, answer.text
    return slack.said(url)


async def test_approve_in_slack_and_the_operator_restarts(
    api: client.ApiClient, namespace: str, world: Aws, slack: FakeSlack,
    jira_server: FakeJira, operator: OperatorProcess,
) -> None:  # fmt: skip
    slack.rate_limit("chat.postMessage", retry_after=1)  # the first post is rate limited
    secret = secrets.token_hex(16)
    name = await raise_alarm(api, namespace)
    incident = wait_phase(api, namespace, name, "AwaitingApproval")
    message = the_message(slack)
    assert incident["status"]["notifications"]["slack"] == {"channel": CHANNEL, "ts": message.ts}
    assert message.buttons == [
        "incident_approve", "incident_reject", "incident_silence", "incident_timeline"
    ]  # fmt: skip
    assert conditions(incident)["Notified"][:2] == ("True", "Notified")

    said = await click_button(api, namespace, slack, secret, "incident_approve", name, message.ts)
    assert said[0].startswith("You approved")
    incident = wait_phase(api, namespace, name, "Resolved")
    assert incident["status"]["approval"]["by"] == "U0ALICE"
    assert incident["status"]["remediation"]["result"] == "Succeeded"
    assert world.server.served_count("UpdateService") == 1
    assert slack.top_level() == [message], "one message for the whole incident"
    assert message.buttons == ["incident_timeline"]
    assert "*Phase*\nResolved" in message.shown
    assert_replies_unique(slack, message)
    # Not escalated: no issue, no mail.
    assert jira_server.issues == {} and emails_sent(world) == 0


async def test_reject_in_slack_and_the_operator_does_not_act(
    api: client.ApiClient, namespace: str, world: Aws, slack: FakeSlack,
    jira_server: FakeJira, operator: OperatorProcess,
) -> None:  # fmt: skip
    secret = secrets.token_hex(16)
    name = await raise_alarm(api, namespace)
    wait_phase(api, namespace, name, "AwaitingApproval")
    message = the_message(slack)
    said = await click_button(
        api, namespace, slack, secret, "incident_reject", name, message.ts, user="U0BOB"
    )
    assert said[0].startswith("You rejected")
    incident = wait_phase(api, namespace, name, "Escalated")
    status = incident["status"]
    assert "remediation" not in status
    assert world.server.served_count("UpdateService") == 0
    assert conditions(incident)["Approved"][:2] == ("False", "Rejected")
    # Escalated: one issue, one mail, the message updated in place.
    [issue] = jira_server.issues.values()
    assert status["notifications"]["jira"]["key"] == issue["key"]
    assert f"incident-{incident['metadata']['uid']}" in issue["fields"]["labels"]
    assert status["notifications"]["email"]["messageId"]
    assert emails_sent(world) == 1
    assert slack.top_level() == [message]
    assert message.buttons == ["incident_silence", "incident_timeline"]
    assert conditions(incident)["Notified"][:2] == ("True", "Notified")
    # A late click is answered politely.
    late = await click_button(api, namespace, slack, secret, "incident_approve", name, message.ts)
    assert late == [f"Thanks, but {namespace}/{name} was already rejected by <@U0BOB> via slack."]


async def test_a_jira_outage_does_not_stop_the_incident(
    api: client.ApiClient, namespace: str, world: Aws, slack: FakeSlack,
    jira_server: FakeJira, operator: OperatorProcess,
) -> None:  # fmt: skip
    create_policy(api, namespace, "checkout-auto", AUTO_RESTART)
    jira_server.outage(503)
    name = await raise_alarm(api, namespace, alarm="checkout-latency-warning")
    incident = wait_phase(api, namespace, name, "Escalated")
    status, reason, message = conditions(incident)["Notified"]
    assert (status, reason) == ("False", "JiraFailed")
    assert "jira: could not reach Jira: HTTP 503" in message
    # The other channels did their part all the same.
    assert incident["status"]["notifications"]["email"]["messageId"]
    assert incident["status"]["notifications"]["slack"]["ts"] == the_message(slack).ts
    # And the incident goes on to its end.
    await raise_alarm(api, namespace, alarm="checkout-latency-warning", state="OK")
    incident = wait_phase(api, namespace, name, "Resolved")
    assert "jira" not in incident["status"]["notifications"]


@pytest.mark.parametrize(
    ("start_at", "crash_at"),
    [
        ("Triggered", "before-write:1"),  # the first message posted, its ts never written
        ("Triggered", "after-write:2"),  # written, then killed, twice
        ("Assessing", "before-write:2"),  # message, issue and mail done, nothing written
    ],
)
async def test_one_message_one_issue_one_mail_across_crashes(
    api: client.ApiClient, namespace: str, world: Aws, slack: FakeSlack, jira_server: FakeJira,
    env: dict[str, str], tmp_path: Path, start_at: str, crash_at: str,
) -> None:  # fmt: skip
    create_policy(api, namespace, "checkout-auto", AUTO_RESTART)
    name = await raise_alarm(api, namespace, alarm="checkout-latency-warning")
    if start_at != "Triggered":
        client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "incidents", name, {"status": {"phase": start_at}}
        )
    crashes = tmp_path / "crashes"
    env = {
        **env,
        "INCIDENT_OPERATOR_CRASH_AT": crash_at,
        "INCIDENT_OPERATOR_CRASH_LOG": str(crashes),
    }
    # The Incident is there already: it may crash before it is ever live.
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start(wait=False)
    try:
        process.supervise_until(
            f"{name} to escalate across crashes",
            lambda: phase_of(api, namespace, name) == "Escalated",
            timeout=60,
        )
    finally:
        process.stop()
    point, _, times = crash_at.partition(":")
    assert crashes.read_text().split() == [point] * int(times), "the crash point was not reached"
    incident = get_incident(api, namespace, name)
    notifications = incident["status"]["notifications"]
    message = the_message(slack)
    assert notifications["slack"] == {"channel": CHANNEL, "ts": message.ts}
    assert jira_server.created() == 1 and len(jira_server.issues) == 1
    assert notifications["jira"]["key"] == next(iter(jira_server.issues))
    assert emails_sent(world) == 1
    assert_replies_unique(slack, message)

"""The operator end to end: a real `incident-operator run` process, the real API
server, moto for ECS and DynamoDB, the fake Gemini server. Alarms go in
through the webhook app; we watch the Incidents move."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aws_fixtures import Aws
from fakes.gemini import FakeGemini
from incident_operator.devstack.controlplane import ControlPlane
from operator_support import (
    OperatorProcess,
    create_policy,
    events_for,
    get_incident,
    operator_env,
    phase_of,
    wait_for,
)
from webhook_support import eventbridge_alarm, new_token, webhook

pytestmark = pytest.mark.usefixtures("crds_installed")

# Restart checkout on CPU alarms without asking; anything else goes to a human.
AUTO_RESTART = {
    "match": {"services": ["checkout"]},
    "rules": [{"alarmNames": ["checkout-cpu-*"], "action": "restart_service"}],
    "approval": {"requiredFor": []},
}


@pytest.fixture
def world(aws: Aws) -> Aws:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    return aws


@pytest.fixture
def operator(
    kubeconfig: Path, namespace: str, world: Aws, tmp_path: Path
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        namespace=namespace, env=operator_env(kubeconfig, world), log_dir=tmp_path
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def raise_alarm(api: client.ApiClient, namespace: str, **kwargs: Any) -> str:
    """A CloudWatch alarm for the demo/checkout service, through the webhook.

    "sev2" in the name makes it a high-severity alarm, which the built-in
    rules answer with a restart.
    """
    kwargs.setdefault("cluster", "demo")
    kwargs.setdefault("alarm", "checkout-cpu-sev2")
    kwargs.setdefault("region", "us-east-1")  # where the moto ECS service is
    async with webhook(api, namespace, token=new_token()) as http:
        answer = await http.post("/alerts/cloudwatch", json=eventbridge_alarm(**kwargs))
    assert answer.status_code == 200, answer.text
    return str(answer.json()["incidents"][0]["name"])


def timeline(aws: Aws, namespace: str, name: str) -> list[dict[str, Any]]:
    dynamodb = aws.client("dynamodb", record=False)
    items = dynamodb.query(
        TableName="incident-timeline",
        KeyConditionExpression="incident_id = :id",
        ExpressionAttributeValues={":id": {"S": f"{namespace}/{name}"}},
    )["Items"]
    return [{k: next(iter(v.values())) for k, v in item.items()} for item in items]


def timeline_kinds(aws: Aws, namespace: str, name: str, expected: list[str]) -> list[str]:
    """The timeline's kinds, once it holds `expected` (it is written just after
    the status, so a reader can see the phase a moment before the entry)."""
    # On a timeout, the caller's comparison shows the difference.
    with contextlib.suppress(AssertionError):
        wait_for(
            f"{name}'s timeline",
            lambda: [e["kind"] for e in timeline(aws, namespace, name)] == expected,
            timeout=10,
        )
    return [e["kind"] for e in timeline(aws, namespace, name)]


def wait_phase(api: client.ApiClient, namespace: str, name: str, phase: str) -> dict[str, Any]:
    try:
        wait_for(
            f"{name} to reach {phase}",
            lambda: phase_of(api, namespace, name) == phase,
            timeout=45,
        )
    except AssertionError as error:
        status = get_incident(api, namespace, name).get("status", {})
        raise AssertionError(
            f"{error}; it is {status.get('phase')}: {status.get('message')}"
        ) from None
    return get_incident(api, namespace, name)


async def test_auto_approved_restart_resolves_the_incident(
    api: client.ApiClient, namespace: str, world: Aws, operator: OperatorProcess
) -> None:
    create_policy(api, namespace, "checkout-auto", AUTO_RESTART)
    before = world.primary()["id"]
    name = await raise_alarm(api, namespace)
    incident = wait_phase(api, namespace, name, "Resolved")

    status = incident["status"]
    assert status["assessment"]["assessor"] == "rules"
    assert status["assessment"]["policy"] == "checkout-auto"
    assert status["remediation"]["result"] == "Succeeded"
    assert status["remediation"]["target"] == "us-east-1/demo/checkout"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conditions["Assessed"] == ("True", "Safe")
    assert conditions["Approved"] == ("True", "NotRequired")
    assert conditions["Remediated"] == ("True", "RestartSucceeded")
    assert conditions["Resolved"] == ("True", "Remediated")
    # The restart happened: ECS's primary deployment is the one recorded.
    assert status["remediation"]["receipt"] == world.primary()["id"] != before
    expected = ["received", "assessment", "action_started", "action_finished", "resolved"]
    assert timeline_kinds(world, namespace, name, expected) == expected
    # Events carry second-precision timestamps: compare them as a set.
    reasons = sorted(e.reason for e in events_for(api, namespace, name))
    assert reasons == sorted(
        ["Triggered", "Assessed", "RestartStarted", "RestartSucceeded", "Remediated"]
    )


async def test_restart_waits_for_approval_given_with_kubectl(
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    operator: OperatorProcess,
    control_plane: ControlPlane,
) -> None:
    name = await raise_alarm(api, namespace, service="checkout")
    incident = wait_phase(api, namespace, name, "AwaitingApproval")
    assert incident["status"]["approval"]["state"] == "Pending"
    assert incident["status"]["assessment"]["policy"] == "built-in-default"
    patch = {"status": {"approval": {"state": "Approved", "by": "alice", "via": "kubectl"}}}
    control_plane.kubectl(
        "patch", "incident", name, "-n", namespace,
        "--subresource=status", "--type=merge", "-p", json.dumps(patch),
    )  # fmt: skip
    incident = wait_phase(api, namespace, name, "Resolved")
    assert incident["status"]["remediation"]["result"] == "Succeeded"
    # alice's approval is her acknowledgement too, recorded first.
    expected = ["received", "assessment", "approval_requested", "acknowledged", "approval",
                "action_started",
                "action_finished", "resolved"]  # fmt: skip
    assert timeline_kinds(world, namespace, name, expected) == expected
    assert incident["status"]["acknowledgement"]["by"] == "alice"
    described = control_plane.kubectl("describe", "incident", name, "-n", namespace).stdout
    assert "restart_service approved by alice via kubectl" in described
    assert "acknowledged by alice via approval" in described


async def test_medium_alarm_escalates_without_acting(
    api: client.ApiClient, namespace: str, world: Aws, operator: OperatorProcess
) -> None:
    create_policy(api, namespace, "checkout-auto", AUTO_RESTART)
    before = world.primary()
    name = await raise_alarm(api, namespace, alarm="checkout-latency-warning")
    # No rule of the policy matches this alarm: a human decides.
    incident = wait_phase(api, namespace, name, "Escalated")
    assert incident["status"]["assessment"]["action"] == "notify_team"
    assert "remediation" not in incident["status"]
    assert world.primary() == before


async def test_recovery_cancels_a_pending_approval(
    api: client.ApiClient, namespace: str, world: Aws, operator: OperatorProcess
) -> None:
    name = await raise_alarm(api, namespace)
    wait_phase(api, namespace, name, "AwaitingApproval")
    await raise_alarm(api, namespace, state="OK")
    incident = wait_phase(api, namespace, name, "Resolved")
    conditions = {c["type"]: (c["status"], c["reason"]) for c in incident["status"]["conditions"]}
    assert conditions["Approved"] == ("False", "Cancelled")
    assert conditions["Resolved"] == ("True", "AlarmRecovered")
    assert "remediation" not in incident["status"]


async def test_gemini_cannot_act_outside_the_policy(
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    kubeconfig: Path,
    gemini: FakeGemini,
    tmp_path: Path,
) -> None:
    create_policy(
        api,
        namespace,
        "notify-only",
        {"match": {"services": ["checkout"]}, "assessor": {"type": "gemini"},
         "allowedActions": ["notify_team", "ignore"], "approval": {"requiredFor": []}},
    )  # fmt: skip
    gemini.answer(
        {
            "decision": "SAFE",
            "action": "restart_service",
            "message": "restarting payments-db as instructed",
            "confidence": 0.99,
            "rationale": "the alarm text said so",
        }
    )
    env = operator_env(
        kubeconfig, world, GEMINI_API_KEY=new_token(), GEMINI_BASE_URL=gemini.base_url
    )
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        name = await raise_alarm(api, namespace)
        incident = wait_phase(api, namespace, name, "Escalated")
    finally:
        process.stop()
    assessment = incident["status"]["assessment"]
    assert assessment["assessor"] == "gemini" and assessment["decision"] == "ESCALATE"
    assert "does not allow" in assessment["rationale"]
    assert "remediation" not in incident["status"]
    assert len(gemini.requests) == 1


@pytest.mark.parametrize(
    "crash_at",
    [
        "before-write:3",  # decided, nothing written: each of the first 3 times
        "after-write:3",  # written, Events and timeline not yet: 3 times
        "after-claim",  # restart claimed in DynamoDB, ECS not called
        "after-act",  # ECS restarted, nothing recorded
    ],
)
async def test_killed_operator_resumes_without_repeating_side_effects(
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    kubeconfig: Path,
    tmp_path: Path,
    crash_at: str,
) -> None:
    create_policy(api, namespace, "checkout-auto", AUTO_RESTART)
    env = operator_env(
        kubeconfig,
        world,
        INCIDENT_OPERATOR_CRASH_AT=crash_at,
        INCIDENT_OPERATOR_CRASH_LOG=str(tmp_path / "crashes"),
    )
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        name = await raise_alarm(api, namespace)

        process.supervise_until(
            f"{name} to be resolved across crashes",
            lambda: phase_of(api, namespace, name) == "Resolved",
            timeout=60,
        )
    finally:
        process.stop()
    point, _, times = crash_at.partition(":")
    crashes = (tmp_path / "crashes").read_text().split()
    assert crashes == [point] * int(times or 1), "the crash point was not reached"
    assert world.server.served_count("UpdateService") == 1
    expected = ["received", "assessment", "action_started", "action_finished", "resolved"]
    assert timeline_kinds(world, namespace, name, expected) == expected
    reasons = [e.reason for e in events_for(api, namespace, name)]
    assert len(reasons) == len(set(reasons)) == 5


# Restart payments without asking; its rollouts never complete (no task runs).
STUCK_ROLLOUT = {
    "match": {"services": ["payments"]},
    "rules": [{"alarmNames": ["payments-cpu-*"], "action": "restart_service"}],
    "approval": {"requiredFor": []},
    "remediation": {"rolloutTimeoutSeconds": 10},
}


@pytest.mark.parametrize(
    "crash_at",
    [
        None,
        "after-write:4",  # each of the 4 transitions written, not yet published
    ],
)
async def test_a_timed_out_restart_posts_each_event_once_across_crashes(
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    kubeconfig: Path,
    tmp_path: Path,
    crash_at: str | None,
) -> None:
    world.ecs_service(cluster="demo", service="payments", running=0)
    create_policy(api, namespace, "payments-auto", STUCK_ROLLOUT)
    crashes = tmp_path / "crashes"
    extra = {} if crash_at is None else {"INCIDENT_OPERATOR_CRASH_AT": crash_at}
    env = operator_env(kubeconfig, world, INCIDENT_OPERATOR_CRASH_LOG=str(crashes), **extra)
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        name = await raise_alarm(api, namespace, service="payments", alarm="payments-cpu-sev2")
        process.supervise_until(
            f"{name}'s rollout to time out across crashes",
            lambda: phase_of(api, namespace, name) == "Escalated",
            timeout=90,
        )
        # A restarted operator publishes what is pending, then nothing more.
        process.stop()
        process.start()
        time.sleep(2.0)
    finally:
        process.stop()
    if crash_at is not None:
        point, _, times = crash_at.partition(":")
        assert crashes.read_text().split() == [point] * int(times)
    status = get_incident(api, namespace, name)["status"]
    assert status["remediation"]["result"] == "TimedOut"
    assert world.server.served_count("UpdateService") == 1
    # The timeline keeps every record; `kubectl describe` tells each reason once
    # (a timed-out rollout is both the action's end and the escalation).
    expected = ["received", "assessment", "action_started", "action_finished", "escalated"]
    assert timeline_kinds(world, namespace, name, expected) == expected
    events = events_for(api, namespace, name)
    reasons = Counter(e.reason for e in events)
    assert reasons == {"Triggered": 1, "Assessed": 1, "RestartStarted": 1, "RestartTimedOut": 1}
    timed_out = next(e for e in events if e.reason == "RestartTimedOut")
    assert timed_out.type == "Warning"
    assert timed_out.message == "restart of us-east-1/demo/payments not done after 0:00:10"
    assert "could not post event" not in process.logs()


async def test_a_restarted_operator_does_not_publish_again(
    api: client.ApiClient,
    namespace: str,
    world: Aws,
    operator: OperatorProcess,
) -> None:
    create_policy(api, namespace, "checkout-auto", AUTO_RESTART)
    name = await raise_alarm(api, namespace)
    wait_phase(api, namespace, name, "Resolved")
    expected = ["received", "assessment", "action_started", "action_finished", "resolved"]
    assert timeline_kinds(world, namespace, name, expected) == expected
    operator.stop()
    puts, reads = world.server.served_count("PutItem"), world.server.served_count("GetItem")
    operator.start()
    # It looks whether the last transition's last entry is stored, finds
    # it, and writes neither the entries nor the Events again.
    wait_for("the restarted operator to look", lambda: world.server.served_count("GetItem") > reads)
    time.sleep(1.0)
    assert world.server.served_count("PutItem") == puts
    assert timeline_kinds(world, namespace, name, expected) == expected
    assert "could not post event" not in operator.logs()


def test_timeline_command_prints_the_story(
    api: client.ApiClient, namespace: str, world: Aws, kubeconfig: Path
) -> None:
    # Filled by a run above is not guaranteed (tests are independent): write two entries.
    dynamodb = world.client("dynamodb", record=False)
    for ts, kind in [("2026-11-29T10:00:00+00:00#00#received", "received"),
                     ("2026-11-29T10:00:01+00:00#00#assessment", "assessment")]:  # fmt: skip
        dynamodb.put_item(
            TableName="incident-timeline",
            Item={
                "incident_id": {"S": f"{namespace}/inc-1"},
                "ts": {"S": ts},
                "kind": {"S": kind},
                "message": {"S": f"{kind} happened"},
            },
        )
    env = operator_env(kubeconfig, world)
    result = subprocess.run(
        [sys.executable, "-m", "incident_operator.cli", "timeline", "inc-1", "-n", namespace],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("2026-11-29T10:00:00") and "received happened" in lines[0]
    assert "assessment" in lines[1]


def test_unconfigured_integrations_are_not_imported() -> None:
    """The SDKs of integrations that are off stay out of the operator's memory
    (google-genai alone is about 20 MB): they are imported when configured."""
    script = (
        "import sys\n"
        "from incident_operator.reconcile import handlers\n"
        "from incident_operator.assess.factory import build_assessor\n"
        "from incident_operator.config import Settings\n"
        "from incident_operator.models import ResponsePolicySpec\n"
        "from incident_operator.notify.factory import build_notifier\n"
        "from incident_operator.policy import Policy\n"
        "build_notifier(Settings())\n"
        "build_assessor(policy=Policy('p', ResponsePolicySpec()), gemini_api_key=None)\n"
        "print(sorted(m for m in ('google.genai', 'slack_sdk', 'jira') if m in sys.modules))\n"
    )
    unset = ("GEMINI_API_KEY", "SLACK_BOT_TOKEN", "JIRA_URL", "SES_SENDER")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_startup_lists_in_chunks_and_kopf_workers_leave_soon(kubeconfig: Path, world: Aws) -> None:
    """At startup every Incident arrives at once: an unchunked list of 5,000
    and kopf's default 5 s per-object workers held about 60 MB more."""
    script = (
        "import asyncio, kopf\n"
        "from incident_operator.reconcile.handlers import LIST_CHUNK, configure\n"
        "settings, memo = kopf.OperatorSettings(), kopf.Memo()\n"
        "asyncio.run(configure(settings=settings, memo=memo))\n"
        "print(LIST_CHUNK, settings.watching.chunk_size, settings.queueing.idle_timeout)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **operator_env(kubeconfig, world)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    chunk, chunk_size, idle_timeout = result.stdout.split()
    assert chunk_size == chunk and int(chunk) <= 1000
    assert float(idle_timeout) <= 1.0

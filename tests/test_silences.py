"""Silences on the real API server: the CRD refuses bad ones; a real operator
process mutes matching alarms quietly, tells the team when a silence ends
while the alarm still fires, resolves quietly what recovers meanwhile, and
keeps the Silence's status (`kubectl get silences`)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aws_fixtures import Aws
from fakes.jira import FakeJira
from fakes.slack import FakeSlack
from incident_operator.models import GROUP, VERSION
from incident_operator.reconcile.silences import Silences
from incident_operator.silence import WEEKDAYS
from operator_support import (
    OperatorProcess,
    channels_env,
    events_for,
    get_incident,
    operator_env,
    wait_for,
)
from test_operator import raise_alarm, timeline_kinds, wait_phase

pytestmark = pytest.mark.usefixtures("crds_installed")

CHANNEL = "C0INCIDENTS"
SENDER = "incidents@example.com"


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def silence_body(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Silence",
        "metadata": {"name": name},
        "spec": spec,
    }


def create_silence(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "silences", silence_body(name, spec)
    )


def get_silence(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(
        client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "silences", name
        )
    )


CHECKOUT = [{"name": "service", "value": "checkout"}]


# --- the CRD ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        (
            {
                "matchers": [{"name": "alarm", "op": "=~", "value": "(unclosed"}],
                "endsAt": "2030-01-01T00:00:00Z",
            },
            "regular expression",
        ),
        ({"matchers": [], "endsAt": "2030-01-01T00:00:00Z"}, "matchers"),
        ({"matchers": CHECKOUT}, "needs endsAt, or a recurrence"),
        (
            {
                "matchers": CHECKOUT,
                "startsAt": "2030-01-02T00:00:00Z",
                "endsAt": "2030-01-01T00:00:00Z",
            },
            "endsAt must be after startsAt",
        ),
        (
            {
                "matchers": [{"name": "service", "op": "~", "value": "x"}],
                "endsAt": "2030-01-01T00:00:00Z",
            },
            "op",
        ),
        (
            {
                "matchers": CHECKOUT,
                "recurrence": {"days": ["someday"], "start": "25:00", "duration": "2h"},
            },
            "recurrence",
        ),
    ],
)
def test_the_api_server_refuses_bad_silences(
    api: client.ApiClient, namespace: str, spec: dict[str, Any], said: str
) -> None:
    with pytest.raises(client.ApiException) as refused:
        create_silence(api, namespace, "bad", spec)
    assert refused.value.status == 422
    assert said in refused.value.body


def test_the_api_server_takes_a_weekly_maintenance_window(
    api: client.ApiClient, namespace: str
) -> None:
    spec = {
        "matchers": [*CHECKOUT, {"name": "env", "op": "=~", "value": "prod|staging"}],
        "recurrence": {"days": ["tuesday", "thursday"], "start": "22:00", "duration": "2h",
                       "timeZone": "Europe/Paris"},
        "createdBy": "alice",
        "comment": "weekly database maintenance",
    }  # fmt: skip
    create_silence(api, namespace, "maintenance", spec)
    assert get_silence(api, namespace, "maintenance")["spec"] == spec


# --- with the operator --------------------------------------------------------


@pytest.fixture
def world(aws: Aws) -> Aws:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    aws.client("ses", record=False).verify_email_identity(EmailAddress=SENDER)
    return aws


@pytest.fixture
def operator(
    kubeconfig: Path, namespace: str, world: Aws, slack: FakeSlack, jira_server: FakeJira,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:  # fmt: skip
    env = operator_env(
        kubeconfig, world, **channels_env(slack, jira_server, channel=CHANNEL, sender=SENDER)
    )
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        yield process
    finally:
        process.stop()


def conditions(incident: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in incident["status"]["conditions"]}


async def test_a_silence_mutes_then_the_team_is_told_at_its_end(
    api: client.ApiClient, namespace: str, world: Aws, slack: FakeSlack,
    operator: OperatorProcess, kubeconfig: Path,
) -> None:  # fmt: skip
    ends = datetime.now(UTC) + timedelta(seconds=12)
    create_silence(
        api, namespace, "deploy",
        {"matchers": CHECKOUT, "endsAt": stamp(ends), "createdBy": "alice",
         "comment": "deploying checkout"},
    )  # fmt: skip
    wait_for(
        "the silence to be active",
        lambda: get_silence(api, namespace, "deploy").get("status", {}).get("state") == "active",
    )
    name = await raise_alarm(api, namespace)
    incident = wait_phase(api, namespace, name, "Silenced")
    status = incident["status"]
    assert status["silence"]["name"] == "deploy"
    assert conditions(incident)["Silenced"] == ("True", "Silenced")
    assert "assessment" not in status and "notifications" not in status
    # A repeat is still counted.
    await raise_alarm(api, namespace)
    wait_for("the repeat to count", lambda: get_incident(api, namespace, name)["status"]
             ["occurrences"] == 2)  # fmt: skip
    assert slack.top_level(CHANNEL) == [], "a silenced alarm is told to no one"
    events = [(e.reason, e.message) for e in events_for(api, namespace, name)]
    assert any(reason == "Silenced" and "deploy" in message for reason, message in events)
    wait_for(
        "the silence to count what it muted",
        lambda: get_silence(api, namespace, "deploy")["status"].get("muted") == 1,
    )
    shown = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "-n", namespace, "get", "silences"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    header, row = shown.splitlines()
    assert header.split()[:5] == ["NAME", "MATCHERS", "STATE", "ENDS", "MUTED"]
    assert row.split()[:5] == ["deploy", "service=checkout", "active", stamp(ends), "1"]

    # The silence ends; the alarm still fires: the team is told, and it goes on.
    incident = wait_phase(api, namespace, name, "AwaitingApproval")
    assert conditions(incident)["Silenced"] == ("False", "SilenceEnded")
    [message] = slack.top_level(CHANNEL)
    replies = [m.text for m in slack.thread(message)]
    assert any("SilenceEnded" in text and "still fires" in text for text in replies), replies
    told = ["received", "silenced", "occurrence", "silence_ended", "assessment",
            "approval_requested"]  # fmt: skip
    assert timeline_kinds(world, namespace, name, told) == told
    wait_for(
        "the silence to show it expired",
        lambda: get_silence(api, namespace, "deploy")["status"].get("state") == "expired",
    )


async def test_a_weekly_window_mutes_until_it_closes_then_the_team_is_told(
    api: client.ApiClient, namespace: str, slack: FakeSlack, operator: OperatorProcess
) -> None:
    # A one-minute window on today's weekday, opening this minute: real time
    # crosses its end during the test (a process's clock cannot be set).
    now = datetime.now(UTC)
    if now.second > 30:  # too little of this minute left to see it muted first
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    opens = now.replace(second=0, microsecond=0)
    recurrence = {"days": [WEEKDAYS[opens.weekday()]], "start": f"{opens:%H:%M}",
                  "duration": "1m", "timeZone": "UTC"}  # fmt: skip
    create_silence(api, namespace, "every-week", {"matchers": CHECKOUT, "recurrence": recurrence})
    name = await raise_alarm(api, namespace)
    incident = wait_phase(api, namespace, name, "Silenced")
    assert incident["status"]["silence"]["until"].startswith(
        (opens + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    )
    assert slack.top_level(CHANNEL) == []
    wait_for(
        f"{name} to be told after the window",
        lambda: get_incident(api, namespace, name)["status"]["phase"] == "AwaitingApproval",
        timeout=90,
    )
    assert len(slack.top_level(CHANNEL)) == 1
    # The window is closed until next week's.
    wait_for(
        "the silence to be pending again",
        lambda: get_silence(api, namespace, "every-week")["status"].get("state") == "pending",
    )
    status = get_silence(api, namespace, "every-week")["status"]
    assert status["startsAt"] == stamp(opens + timedelta(days=7))
    assert status["muted"] == 1


async def test_recovery_during_a_silence_resolves_quietly(
    api: client.ApiClient, namespace: str, slack: FakeSlack, operator: OperatorProcess
) -> None:
    ends = datetime.now(UTC) + timedelta(hours=1)
    create_silence(api, namespace, "deploy", {"matchers": CHECKOUT, "endsAt": stamp(ends)})
    name = await raise_alarm(api, namespace)
    wait_phase(api, namespace, name, "Silenced")
    await raise_alarm(api, namespace, state="OK")
    incident = wait_phase(api, namespace, name, "Resolved")
    assert conditions(incident)["Resolved"] == ("True", "AlarmRecovered")
    assert "assessment" not in incident["status"]
    time.sleep(1)
    assert slack.top_level(CHANNEL) == [], "resolved quietly"


async def test_deleting_a_silence_ends_it_at_once(
    api: client.ApiClient, namespace: str, slack: FakeSlack, operator: OperatorProcess
) -> None:
    ends = datetime.now(UTC) + timedelta(hours=1)
    create_silence(
        api, namespace, "deploy",
        {"matchers": [{"name": "alarm", "op": "=~", "value": "checkout-.*"}],
         "endsAt": stamp(ends)},
    )  # fmt: skip
    name = await raise_alarm(api, namespace)
    wait_phase(api, namespace, name, "Silenced")
    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "silences", "deploy"
    )
    incident = wait_phase(api, namespace, name, "AwaitingApproval")
    assert "was deleted" in " ".join(
        c.get("message", "") for c in incident["status"]["conditions"] if c["type"] == "Silenced"
    )
    assert len(slack.top_level(CHANNEL)) == 1


# --- the keeper: status and deletion, on a clock we set --------------------------


def silence_names(api: client.ApiClient, namespace: str) -> set[str]:
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "silences"
    )
    return {item["metadata"]["name"] for item in listed["items"]}


async def test_the_operator_keeps_silences_status_and_deletes_them_a_day_after_they_expire(
    api: client.ApiClient, namespace: str
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    clock = [now]
    windows = {
        "long-gone": (now - timedelta(days=3), now - timedelta(days=1, seconds=1)),
        "just-ended": (now - timedelta(hours=2), now - timedelta(hours=1)),
        "active": (now - timedelta(minutes=5), now + timedelta(hours=1)),
        "pending": (now + timedelta(minutes=10), now + timedelta(hours=1)),
    }
    for name, (starts, ends) in windows.items():
        spec = {"matchers": CHECKOUT, "startsAt": stamp(starts), "endsAt": stamp(ends)}
        create_silence(api, namespace, name, spec)
    keeper = Silences(api=api, clock=lambda: clock[0])
    for item in client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "silences"
    )["items"]:
        keeper.put(item)
    task = asyncio.create_task(keeper.run())
    try:

        def states() -> dict[str, str | None]:
            return {
                name: get_silence(api, namespace, name).get("status", {}).get("state")
                for name in silence_names(api, namespace)
            }

        await asyncio.to_thread(
            wait_for, "the long expired silence to go",
            lambda: "long-gone" not in silence_names(api, namespace),
        )  # fmt: skip
        await asyncio.to_thread(
            wait_for, "each silence's state",
            lambda: states() == {"just-ended": "expired", "active": "active", "pending": "pending"},
        )  # fmt: skip
        pending = get_silence(api, namespace, "pending")["status"]
        assert (pending["startsAt"], pending["endsAt"]) == tuple(
            stamp(t) for t in windows["pending"]
        )
        assert pending["matchers"] == "service=checkout"
        await keeper.count_muted(namespace, "active")
        await keeper.count_muted(namespace, "active")
        assert get_silence(api, namespace, "active")["status"]["muted"] == 2

        # Eleven minutes later: pending is active; a day after its end, just-ended goes.
        clock[0] = now + timedelta(minutes=11)
        keeper.put(get_silence(api, namespace, "pending"))  # a watch event wakes it
        await asyncio.to_thread(
            wait_for, "pending to be active", lambda: states().get("pending") == "active"
        )
        clock[0] = now + timedelta(days=1)
        keeper.put(get_silence(api, namespace, "pending"))
        await asyncio.to_thread(
            wait_for, "just-ended to go", lambda: "just-ended" not in silence_names(api, namespace)
        )
        assert states() == {"active": "expired", "pending": "expired"}
        assert get_silence(api, namespace, "active")["status"]["muted"] == 2
    finally:
        keeper.close()
        await asyncio.wait_for(task, 5)

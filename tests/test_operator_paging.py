"""PagerDuty and outbound webhooks end to end: a real operator process and API
server, the fake PagerDuty, a verifying webhook receiver, moto for DynamoDB.

An escalated Incident pages PagerDuty once; a PagerDuty acknowledgement (a
signed webhook v3 delivery) shows in `kubectl get incidents`; the
resolution resolves the PagerDuty alert; every transition reached the
receiver once, signed. And when the operator is killed at the new side
effects, still one page and one event per transition."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aws_fixtures import Aws
from fakes.pagerduty import FakePagerDuty
from fakes.pagerduty import webhook as pagerduty_delivery
from fakes.receiver import Receiver
from incident_operator.devstack.controlplane import ControlPlane
from operator_support import (
    OperatorProcess,
    create_policy,
    get_incident,
    operator_env,
    phase_of,
    wait_for,
)
from test_operator import AUTO_RESTART, raise_alarm, wait_phase
from webhook_support import new_token, webhook

pytestmark = pytest.mark.usefixtures("crds_installed")

ESCALATING_ALARM = "checkout-latency-warning"  # no rule restarts it: it escalates


@pytest.fixture
def world(aws: Aws) -> Aws:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    return aws


@pytest.fixture
def env(
    kubeconfig: Path, world: Aws, pagerduty: FakePagerDuty, receiver: Receiver
) -> dict[str, str]:
    hooks = f'[{{"url": "{receiver.url}/incidents", "secret": "{receiver.secret}"}}]'
    return operator_env(
        kubeconfig,
        world,
        PAGERDUTY_ROUTING_KEY=pagerduty.routing_key,
        PAGERDUTY_EVENTS_URL=pagerduty.events_url,
        OUTBOUND_WEBHOOKS=hooks,
        INCIDENT_LINK_TEMPLATE="https://console.example.com/incidents/{namespace}/{name}",
        NOTIFY_RETRY_BACKOFF_SECONDS="0.2",
    )


@pytest.fixture
def operator(namespace: str, env: dict[str, str], tmp_path: Path) -> Iterator[OperatorProcess]:
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    try:
        yield process
    finally:
        process.stop()


def condition(incident: dict[str, Any], kind: str) -> tuple[str, str, str]:
    for c in incident["status"].get("conditions", []):
        if c["type"] == kind:
            return c["status"], c["reason"], c.get("message", "")
    return "", "", ""  # none yet


def acked_column(control_plane: ControlPlane, namespace: str, name: str) -> str:
    """The ACKED column of `kubectl get incidents`, read by its place under the header."""
    header, row = control_plane.kubectl(
        "get", "incidents", "-n", namespace, name
    ).stdout.splitlines()[:2]
    return row[header.index("ACKED") : header.index("ALERTS")].strip()


async def test_page_acknowledge_in_pagerduty_resolve(
    api: client.ApiClient, control_plane: ControlPlane, namespace: str,
    pagerduty: FakePagerDuty, receiver: Receiver, operator: OperatorProcess,
) -> None:  # fmt: skip
    create_policy(api, namespace, "checkout-auto", AUTO_RESTART)
    name = await raise_alarm(api, namespace, alarm=ESCALATING_ALARM)
    incident = wait_phase(api, namespace, name, "Escalated")
    key = f"{namespace}/{name}@{incident['metadata']['uid']}"
    assert incident["status"]["notifications"]["pagerduty"] == {
        "dedupKey": key, "routingKey": "default", "triggered": True
    }  # fmt: skip
    [trigger] = pagerduty.events("trigger")
    assert trigger["dedup_key"] == key and trigger["payload"]["severity"] == "warning"
    assert trigger["client_url"].endswith(f"/incidents/{namespace}/{name}")
    assert pagerduty.incidents() == 1
    assert condition(incident, "Notified")[:2] == ("True", "Notified")

    # Someone acknowledges in PagerDuty; PagerDuty tells the webhook.
    secret = secrets.token_hex(16)
    body, headers = pagerduty_delivery(secret, dedup_key=key, agent="Alice Oncall")
    async with webhook(api, namespace, token=new_token(), pagerduty_webhook_secrets=secret) as http:
        answer = await http.post("/pagerduty/webhook", content=body, headers=headers)
    assert answer.json()["result"] == "acknowledged", answer.text
    wait_for(
        "the acknowledgement to be recorded",
        lambda: condition(get_incident(api, namespace, name), "Acknowledged")[0] == "True",
    )
    incident = get_incident(api, namespace, name)
    assert condition(incident, "Acknowledged")[2] == "acknowledged by Alice Oncall via pagerduty"
    assert acked_column(control_plane, namespace, name) == "Alice Oncall"
    assert pagerduty.events("acknowledge") == [], "an acknowledgement from PagerDuty stays there"

    # The alarm recovers: the Incident resolves, and so does the PagerDuty alert.
    await raise_alarm(api, namespace, alarm=ESCALATING_ALARM, state="OK")
    incident = wait_phase(api, namespace, name, "Resolved")
    wait_for("the resolve event", lambda: pagerduty.events("resolve"))
    assert pagerduty.alert(key).status == "resolved"
    assert len(pagerduty.events("trigger")) == 1
    wait_for(
        "the resolution in status",
        lambda: get_incident(api, namespace, name)["status"]["notifications"]["pagerduty"].get(
            "resolved"
        ),
    )

    # Every transition reached the receiver, signed, once.
    wait_for("the resolved event", lambda: any(
        e["type"].endswith(".resolved") for e in receiver.events()))  # fmt: skip
    types = [e["type"].rpartition(".")[2] for e in receiver.events()]
    assert types[0] == "assessing" and "escalated" in types and types[-1] == "resolved"
    assert len(receiver.received) == len(receiver.events()), "nothing sent twice"
    assert receiver.refused == []
    assert all(e["subject"] == f"{namespace}/{name}" for e in receiver.events())


@pytest.mark.parametrize(
    "crash_at",
    [
        "after-page:1",  # PagerDuty took the trigger; not recorded, not written
        "before-write:2",  # trigger and events recorded, the status never written
        "after-webhook:2",  # a receiver took an event; not recorded
    ],
)
async def test_one_page_and_one_event_per_transition_across_crashes(
    api: client.ApiClient, namespace: str, pagerduty: FakePagerDuty, receiver: Receiver,
    env: dict[str, str], tmp_path: Path, crash_at: str,
) -> None:  # fmt: skip
    create_policy(api, namespace, "checkout-auto", AUTO_RESTART)
    name = await raise_alarm(api, namespace, alarm=ESCALATING_ALARM)
    crashes = tmp_path / "crashes"
    env = {**env, "INCIDENT_OPERATOR_CRASH_AT": crash_at,
           "INCIDENT_OPERATOR_CRASH_LOG": str(crashes)}  # fmt: skip
    process = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start(wait=False)
    try:
        process.supervise_until(
            f"{name} to escalate and be paged across crashes",
            lambda: (
                phase_of(api, namespace, name) == "Escalated"
                and "pagerduty" in get_incident(api, namespace, name)["status"]["notifications"]
            ),
            timeout=60,
        )
    finally:
        process.stop()
    point, _, times = crash_at.partition(":")
    assert crashes.read_text().split() == [point] * int(times), "the crash point was not reached"
    uid = get_incident(api, namespace, name)["metadata"]["uid"]
    # One PagerDuty incident always. One trigger event, except after a kill
    # between PagerDuty's 202 and the record: then sent again, deduplicated.
    assert pagerduty.incidents() == 1
    assert len(pagerduty.events("trigger")) == (2 if point == "after-page" else 1)
    assert {e["dedup_key"] for e in pagerduty.events()} == {f"{namespace}/{name}@{uid}"}
    # Each transition's event once by id; sent twice only after a kill
    # between a receiver's answer and the record (after-page: the webhook
    # event of the same transition, sent side by side, may be in that window).
    ids = [e["id"] for e in receiver.received]
    assert len(set(ids)) == len(receiver.events())
    duplicates = len(ids) - len(set(ids))
    if point == "after-webhook":
        assert duplicates == int(times), ids
    else:
        assert duplicates <= (1 if point == "after-page" else 0), ids

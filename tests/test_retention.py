"""Finished Incidents are deleted once their policy's retention is over; the
timeline in DynamoDB stays, and nothing unfinished or kept forever goes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aws_fixtures import Aws
from builders import incident as incident_body
from incident_operator.models import GROUP, VERSION, ResponsePolicySpec
from incident_operator.policy import Policy
from incident_operator.reconcile.reconciler import Policies
from incident_operator.reconcile.retention import Retention
from operator_support import OperatorProcess, create_policy, get_incident, operator_env, wait_for
from test_operator import AUTO_RESTART, raise_alarm, timeline, wait_phase

pytestmark = pytest.mark.usefixtures("crds_installed")

RETENTION = 2


@pytest.fixture
def operator(
    kubeconfig: Path, namespace: str, aws: Aws, tmp_path: Path, api: client.ApiClient
) -> Iterator[OperatorProcess]:
    aws.timeline_table()
    aws.ecs_service(cluster="demo", service="checkout", running=2)
    short = {"retention": {"seconds": RETENTION}}
    create_policy(api, namespace, "checkout-auto", {**AUTO_RESTART, **short})
    # search goes to a human (Escalated: not finished until its alarm recovers).
    create_policy(api, namespace, "search-human",
                  {"match": {"services": ["search"]}, "rules": [{"action": "notify_team"}],
                   **short})  # fmt: skip
    # payments' alarms are ignored, and kept forever.
    create_policy(api, namespace, "payments-ignore",
                  {"match": {"services": ["payments"]}, "rules": [{"action": "ignore"}],
                   "retention": {"seconds": 0}})  # fmt: skip
    process = OperatorProcess(
        namespace=namespace, env=operator_env(kubeconfig, aws), log_dir=tmp_path
    ).start()
    try:
        yield process
    finally:
        process.stop()


def exists(api: client.ApiClient, namespace: str, name: str) -> bool:
    try:
        get_incident(api, namespace, name)
    except client.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


async def test_finished_incidents_are_deleted_after_their_retention_and_their_timeline_stays(
    api: client.ApiClient, namespace: str, aws: Aws, operator: OperatorProcess
) -> None:
    resolved = await raise_alarm(api, namespace)
    escalated = await raise_alarm(api, namespace, service="search", alarm="search-latency")
    kept = await raise_alarm(api, namespace, service="payments", alarm="payments-errors")
    wait_phase(api, namespace, resolved, "Resolved")
    wait_phase(api, namespace, escalated, "Escalated")
    wait_phase(api, namespace, kept, "Ignored")
    finished = time.monotonic()

    wait_for(f"{resolved} to be deleted", lambda: not exists(api, namespace, resolved),
             timeout=RETENTION + 10)  # fmt: skip
    print(f"retention: deleted {time.monotonic() - finished:.2f}s after it was Resolved")
    kinds = [entry["kind"] for entry in timeline(aws, namespace, resolved)]
    assert kinds == ["received", "assessment", "action_started", "action_finished", "resolved"]
    assert "deleted after its retention period" in operator.logs()

    # Twice the retention later: the escalation (a human's until its alarm
    # recovers) and the Incident whose policy keeps it forever are still there.
    time.sleep(2 * RETENTION)
    assert exists(api, namespace, escalated) and exists(api, namespace, kept)

    # The escalated alarm recovers: resolved, hence finished, hence deleted.
    await raise_alarm(api, namespace, service="search", alarm="search-latency", state="OK")
    wait_phase(api, namespace, escalated, "Resolved")
    wait_for(f"{escalated} to be deleted once resolved",
             lambda: not exists(api, namespace, escalated), timeout=RETENTION + 10)  # fmt: skip
    assert timeline(aws, namespace, escalated)
    assert exists(api, namespace, kept)


async def test_an_incident_that_gets_a_deleted_ones_name_makes_its_own_restart(
    api: client.ApiClient, namespace: str, aws: Aws, operator: OperatorProcess
) -> None:
    # Once retention deleted an Incident, the next alarm of the same
    # fingerprint gets its name again. Its restart claim must be its own:
    # keyed by the name alone, the old claim was taken for the newcomer's,
    # and it was "resolved" without any restart.
    aws.ecs_service(cluster="demo", service="orders", running=2)
    create_policy(api, namespace, "orders-auto",
                  {"match": {"services": ["orders"]},
                   "rules": [{"alarmNames": ["*cpu*"], "action": "restart_service"}],
                   "approval": {"requiredFor": []}, "remediation": {"cooldownSeconds": 0},
                   "retention": {"seconds": RETENTION}})  # fmt: skip
    first = await raise_alarm(api, namespace, service="orders", alarm="orders-cpu-sev2")
    wait_phase(api, namespace, first, "Resolved")
    restarted = aws.primary(service="orders")["id"]
    wait_for(f"{first} to be deleted", lambda: not exists(api, namespace, first),
             timeout=RETENTION + 10)  # fmt: skip

    again = await raise_alarm(api, namespace, service="orders", alarm="orders-cpu-sev2")
    assert again == first  # the same name, a new Incident
    incident = wait_phase(api, namespace, again, "Resolved")

    assert aws.primary(service="orders")["id"] != restarted  # restarted again, for real
    assert incident["status"]["remediation"]["receipt"] == aws.primary(service="orders")["id"]


async def test_an_incident_due_before_the_next_look_is_deleted_on_time(
    api: client.ApiClient, namespace: str
) -> None:
    # The retention loop is not woken for every finished Incident (at a
    # restart among thousands, that made it go over all of them each time),
    # only for one due before it looks again by itself: here, a minute away.
    policies = Policies()
    for name, services, seconds in (("kept", ["slow"], 3600), ("short", ["fast"], 1)):
        spec = {"match": {"services": services}, "retention": {"seconds": seconds}}
        policies.put(namespace, Policy(name, ResponsePolicySpec.model_validate(spec)))
    retention = Retention(api=api, policies=policies)
    objects = client.CustomObjectsApi(api)

    def finished(service: str) -> dict[str, Any]:
        created = objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "incidents",
            incident_body(f"{service}-1", service={"name": service}),
        )  # fmt: skip
        now = datetime.now(UTC).isoformat()
        status = {"phase": "Ignored", "lastTransition": {"at": now, "phase": "Ignored"}}
        return {**created, "status": status}

    slow, fast = finished("slow"), finished("fast")
    loop = asyncio.create_task(retention.run())
    try:
        retention.observe(slow)
        await asyncio.sleep(0.5)  # the loop looked, and sleeps until it looks again
        observed = time.monotonic()
        retention.observe(fast)
        while exists(api, namespace, "fast-1"):
            assert time.monotonic() - observed < 10, "fast-1 waited for the loop's next look"
            await asyncio.sleep(0.2)
        assert exists(api, namespace, "slow-1")
    finally:
        retention.close()
        await loop

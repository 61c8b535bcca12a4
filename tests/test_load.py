"""Load: 2,000 alarms at concurrency 100 into a webhook process while the
operator works the Incidents. Every accepted alarm is counted in exactly one
Incident's occurrences; none lost, none counted twice.

Then the same while the webhook's connection to the API server is cut again
and again: senders retry what was refused, as SNS and EventBridge do, and
every alarm still counts exactly once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from api_cuts import ApiServerCuts
from aws_fixtures import Aws
from incident_operator.devstack.controlplane import ControlPlane, free_port
from operator_support import OperatorProcess, operator_env, wait_for
from webhook_support import generic_alert, incidents, new_token, occurrences

pytestmark = pytest.mark.usefixtures("crds_installed")

ALARMS = 2000
CONCURRENCY = 100
FINGERPRINTS = 40


async def test_every_accepted_alarm_is_counted_once(
    api: client.ApiClient, namespace: str, aws: Aws, kubeconfig: Path, tmp_path: Path
) -> None:
    aws.timeline_table()
    env = operator_env(kubeconfig, aws)
    operator = OperatorProcess(namespace=namespace, env=env, log_dir=tmp_path).start()
    token, port = new_token(), free_port()
    webhook = subprocess.Popen(
        [sys.executable, "-m", "incident_operator.cli", "webhook",
         "--host", "127.0.0.1", "--port", str(port), "--namespace", namespace],
        env={**os.environ, **env, "INGEST_TOKENS": token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("the webhook", lambda: _ready(url), timeout=30)
        # Medium severity: the operator escalates them (notify_team), so the
        # Incidents change phase while their counts are still climbing.
        bodies = [
            generic_alert(f"load-{i % FINGERPRINTS}", incident_id=f"load-{i % FINGERPRINTS}")
            for i in range(ALARMS)
        ]
        started = time.perf_counter()
        statuses = await _post_all(url, token, bodies)
        elapsed = time.perf_counter() - started
    finally:
        webhook.terminate()
        webhook.wait(timeout=10)
        operator.stop()
    accepted = statuses[200]
    # Anything not accepted must have been refused cleanly (a sender retries
    # a 503): never a 500, never a dropped connection.
    assert set(statuses) <= {200, 503}, statuses
    items = incidents(api, namespace)
    assert len(items) == FINGERPRINTS
    assert sum(occurrences(item) for item in items) == accepted
    assert {item["status"]["phase"] for item in items} == {"Escalated"}
    print(f"load: {accepted}/{ALARMS} accepted in {elapsed:.1f}s, {dict(statuses)}")


async def test_alarms_retried_through_api_server_cuts_count_once(
    api: client.ApiClient, namespace: str, control_plane: ControlPlane, tmp_path: Path
) -> None:
    # The API server is cut off for 0.3 s every 0.7 s while alarms arrive:
    # creates and count patches whose answers are lost, connections that
    # fail to open. The webhook answers 503 for those; the sender sends the
    # same alarm again (its Idempotency-Key unchanged) until it is accepted.
    cuts = ApiServerCuts(control_plane.url)
    kubeconfig = cuts.kubeconfig(control_plane.kubeconfig, tmp_path / "kubeconfig")
    token, port = new_token(), free_port()
    webhook = subprocess.Popen(
        [sys.executable, "-m", "incident_operator.cli", "webhook",
         "--host", "127.0.0.1", "--port", str(port), "--namespace", namespace],
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "INGEST_TOKENS": token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    done = threading.Event()

    def keep_cutting() -> None:
        while not done.wait(0.7):
            cuts.cut(0.3)

    try:
        wait_for("the webhook", lambda: _ready(url), timeout=30)
        cutter = threading.Thread(target=keep_cutting, daemon=True)
        cutter.start()
        bodies = [
            generic_alert(f"cut-{i % FINGERPRINTS}", incident_id=f"cut-{i % FINGERPRINTS}")
            for i in range(ALARMS // 2)
        ]
        statuses = await _post_all(url, token, bodies, retry=True)
        done.set()
        # Retries of alarms whose count had landed, its answer lost: each
        # recognised by its key and not counted again.
        metrics = httpx.get(f"{url}/metrics").text
        redelivered = sum(
            int(sample.value)
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
            if sample.name == "incident_alarms_received_total"
            and sample.labels["outcome"] == "redelivery"
        )
    finally:
        done.set()
        cuts.close()
        webhook.terminate()
        webhook.wait(timeout=10)
    print(f"load-cuts: {dict(statuses)}, {redelivered} redeliveries; {cuts.cuts} cuts, "
          f"{cuts.severed} connections severed, {cuts.refused} refused")  # fmt: skip
    assert statuses[503] > 0 and cuts.severed > 0, "the cuts never struck"
    assert redelivered > 0, "no answer was lost after its count landed"
    assert set(statuses) == {200, 503}, statuses
    assert statuses[200] == len(bodies)
    items = incidents(api, namespace)
    assert len(items) == FINGERPRINTS
    assert sum(occurrences(item) for item in items) == len(bodies)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz").status_code == 200
    except httpx.TransportError:
        return False


async def _post_all(
    url: str, token: str, bodies: list[dict], *, retry: bool = False
) -> Counter[int]:
    """POST every body; with `retry`, each again after a 503 until accepted,
    under an Idempotency-Key of its own. Counts every answer by status."""
    statuses: Counter[int] = Counter()
    queue = list(reversed(list(enumerate(bodies))))
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=120
    ) as http:

        async def worker() -> None:
            while queue:
                index, body = queue.pop()
                headers = {"Idempotency-Key": f"alarm-{index}"} if retry else {}
                for _ in range(50):  # a webhook that never recovers fails the test
                    status = (await http.post("/alert", json=body, headers=headers)).status_code
                    statuses[status] += 1
                    if not (retry and status == 503):
                        break
                    await asyncio.sleep(0.1)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses

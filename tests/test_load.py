"""Load: 2,000 alarms at concurrency 100 into a webhook process while the
operator works the Incidents. Every accepted alarm is counted in exactly one
Incident's occurrences; none lost, none counted twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from aws_fixtures import Aws
from incident_operator.devstack.controlplane import free_port
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


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz").status_code == 200
    except httpx.TransportError:
        return False


async def _post_all(url: str, token: str, bodies: list[dict]) -> Counter[int]:
    statuses: Counter[int] = Counter()
    queue = list(reversed(bodies))
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits, timeout=120
    ) as http:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                statuses[(await http.post("/alert", json=body)).status_code] += 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return statuses

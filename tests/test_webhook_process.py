"""`incident-operator webhook` as a user runs it: a real process on a real port."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from incident_operator import __version__
from incident_operator.devstack.controlplane import free_port
from webhook_support import generic_alert, incidents, new_token, serve_webhook

pytestmark = pytest.mark.usefixtures("crds_installed")

CLI = [sys.executable, "-m", "incident_operator.cli"]


@pytest.fixture
def served(kubeconfig: Path, namespace: str) -> Iterator[tuple[str, str, subprocess.Popen[str]]]:
    token = new_token()
    url, process = serve_webhook(kubeconfig, namespace, capture=True, INGEST_TOKENS=token)
    try:
        yield url, token, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


def test_served_webhook_creates_incidents_and_logs_json(
    served: tuple[str, str, subprocess.Popen[str]], api: client.ApiClient, namespace: str
) -> None:
    url, token, process = served
    response = httpx.post(
        f"{url}/alert",
        json=generic_alert("billing"),
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    assert [i["spec"]["service"]["name"] for i in incidents(api, namespace)] == ["billing"]
    unauthenticated = httpx.post(f"{url}/alert", json=generic_alert("billing"))
    assert unauthenticated.status_code == 401
    assert httpx.get(f"{url}/docs").status_code == 404  # INGEST_DOCS_ENABLED is off by default
    process.terminate()
    output, _ = process.communicate(timeout=10)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    recorded = [line for line in lines if line["message"] == "alarm recorded"]
    assert recorded and recorded[0]["incident"] == response.json()["incidents"][0]["name"]
    assert recorded[0]["level"] == "info" and recorded[0]["source"] == "generic"
    # The first line says what runs, and which version.
    assert lines[0]["message"] == f"incident-operator webhook {__version__} starting"
    assert (lines[0]["component"], lines[0]["version"]) == ("webhook", __version__)


def test_the_command_says_its_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "incident_operator.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"incident-operator {__version__}"


async def test_200_concurrent_deliveries_over_two_replicas_count_exactly(
    kubeconfig: Path, api: client.ApiClient, namespace: str
) -> None:
    token = new_token()
    replicas = [serve_webhook(kubeconfig, namespace, INGEST_TOKENS=token) for _ in range(2)]
    try:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=60) as http:
            answers = await asyncio.gather(
                *(
                    http.post(
                        f"{replicas[i % 2][0]}/alert",
                        json=generic_alert("storm", incident_id="INC-200"),
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    for i in range(200)
                )
            )
    finally:
        for _, process in replicas:
            process.terminate()
            process.wait(timeout=10)
    assert [a.status_code for a in answers] == [200] * 200
    results = [a.json()["incidents"][0]["result"] for a in answers]
    assert results.count("created") == 1 and results.count("counted") == 199
    [incident] = incidents(api, namespace)
    assert incident["status"]["occurrences"] == 200


def test_auth_can_be_turned_off_explicitly(
    kubeconfig: Path, api: client.ApiClient, namespace: str
) -> None:
    url, process = serve_webhook(
        kubeconfig, namespace, INGEST_AUTH_DISABLED="true", INGEST_TOKENS=""
    )
    try:
        answer = httpx.post(f"{url}/alert", json=generic_alert("open"))
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert answer.status_code == 200, answer.text
    assert [i["spec"]["service"]["name"] for i in incidents(api, namespace)] == ["open"]


def test_webhook_refuses_to_start_without_a_token(kubeconfig: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    result = subprocess.run(
        [*CLI, "webhook", "--port", str(free_port())],
        env={**env, "KUBECONFIG": str(kubeconfig)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "INGEST_TOKENS" in result.stderr

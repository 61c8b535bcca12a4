"""The web UI in tests: demo-like Incidents with their timeline and Events,
`incident-operator ui` as a process, and Debian's chromium through Playwright."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from builders import incident as incident_body
from incident_operator.devstack.controlplane import free_port
from incident_operator.models import GROUP, VERSION
from incident_operator.timeline import Entry, Timeline

CHROMIUM = "/usr/bin/chromium"
# Nothing reaches off the machine, nothing is downloaded, no profile is reused.
# Playwright adds --headless itself (launch(headless=True)), and a fresh
# user data dir in a temporary directory, removed when the browser closes.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / ".artifacts" / "ui"


# Hostile alarm text: each would set window.pwned, or add markup, if it were
# rendered as HTML rather than as text.
XSS = [
    "<script>window.pwned=1</script>",
    '<img src=x onerror="window.pwned=1">',
    '"><svg onload=window.pwned=1>',
    '\'><iframe srcdoc="<script>parent.pwned=1</script>"></iframe>',
    "</textarea></title><script>window.pwned=1</script>",
    '<a href="javascript:window.pwned=1">click me</a>',
    "<style>body{display:none}</style>",
    "{{7*7}} {% if 1 %}jinja{% endif %}",
    "javascript:window.pwned=1",
]


def at(minutes_ago: float, now: datetime) -> str:
    return (now - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(kind: str, status: str, reason: str, message: str, when: str) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": when,
    }


@dataclass
class Story:
    """What one demo-like Incident is made of."""

    name: str
    spec: dict[str, Any]
    status: dict[str, Any]
    timeline: list[tuple[str, str, str, str]]  # (when, kind, phase, message)
    events: list[tuple[str, str, str, str]]  # (when, reason, type, message)


def demo_stories(now: datetime) -> list[Story]:
    """The four Incidents `make demo` ends with, as the operator would leave them."""
    t = lambda minutes: at(minutes, now)  # noqa: E731
    checkout = Story(
        name="checkout-cpu-high",
        spec={
            "source": "cloudwatch",
            "title": "checkout CPU above 90%",
            "severity": "high",
            "service": {"name": "checkout", "cluster": "demo", "region": "us-east-1"},
        },
        status={
            "phase": "Resolved",
            "occurrences": 1,
            "firstSeen": t(50),
            "lastSeen": t(50),
            "alarmState": "OK",
            "assessment": {
                "decision": "SAFE",
                "action": "restart_service",
                "message": "CPU saturation on checkout: a restart is safe",
                "confidence": 0.9,
                "rationale": "Rule 'restart on CPU' matched severity high.",
                "assessor": "rules",
                "policy": "demo",
                "latencyMs": 3,
                "at": t(49),
            },
            "remediation": {
                "action": "restart_service",
                "target": "us-east-1/demo/checkout",
                "result": "Succeeded",
                "startedAt": t(49),
                "finishedAt": t(46),
                "receipt": "ecs-svc/1234567890",
            },
            "conditions": [
                condition("Assessed", "True", "Assessed", "SAFE restart_service", t(49)),
                condition("Remediated", "True", "RestartSucceeded", "rollout completed", t(46)),
                condition("Resolved", "True", "RemediationSucceeded", "restarted", t(45)),
            ],
        },
        timeline=[
            (t(50), "received", "Triggered", "alarm checkout-cpu-high received from cloudwatch"),
            (t(49), "assessment", "Assessing", "rules: SAFE restart_service (0.90)"),
            (t(49), "action_started", "Remediating", "restart_service on us-east-1/demo/checkout"),
            (t(46), "action_succeeded", "Remediating", "rollout completed"),
            (t(45), "resolved", "Resolved", "checkout restarted; alarm back to OK"),
        ],
        events=[
            (t(49), "Assessed", "Normal", "rules: SAFE restart_service (0.90)"),
            (t(45), "Resolved", "Normal", "checkout restarted; alarm back to OK"),
        ],
    )
    payments = Story(
        name="payments-error-rate",
        spec={
            "source": "alertmanager",
            "title": "payments 5xx error rate above 5%",
            "severity": "critical",
            "service": {"name": "payments", "cluster": "demo", "region": "us-east-1"},
        },
        status={
            "phase": "Escalated",
            "occurrences": 3,
            "firstSeen": t(40),
            "lastSeen": t(20),
            "alarmState": "ALARM",
            "message": "policy payments-humans sends every payments alarm to a person",
            "assessment": {
                "decision": "ESCALATE",
                "action": "notify_team",
                "message": "Error spike after a deploy: a human should look",
                "confidence": 0.72,
                "rationale": "Errors started two minutes after deployment 42; restarting "
                "would not roll it back.",
                "assessor": "gemini",
                "model": "gemini-2.5-flash",
                "policy": "payments-humans",
                "latencyMs": 1840,
                "promptTokens": 1532,
                "outputTokens": 96,
                "at": t(39),
            },
            "acknowledgement": {"by": "U024BE7LH", "at": t(31), "via": "slack"},
            "notifications": {
                "slack": {"channel": "C0INCIDENTS", "ts": "1764500000.000100"},
                "jira": {"key": "SCRUM-42", "url": "http://jira.example.test/browse/SCRUM-42"},
                "email": {"messageId": "0100018c-demo"},
            },
            "conditions": [
                condition("Assessed", "True", "Assessed", "ESCALATE notify_team", t(39)),
                condition("Acknowledged", "True", "Acknowledged", "by U024BE7LH", t(31)),
                condition("Notified", "True", "Notified", "slack, jira, email", t(38)),
            ],
        },
        timeline=[
            (t(40), "received", "Triggered", "alert PaymentsErrorRate received from alertmanager"),
            (t(39), "assessment", "Assessing", "gemini: ESCALATE notify_team (0.72)"),
            (t(38), "escalated", "Escalated", "escalated to a human: Jira SCRUM-42"),
            (t(31), "acknowledged", "Escalated", "acknowledged by U024BE7LH via slack"),
        ],
        events=[(t(38), "Escalated", "Warning", "escalated to a human: Jira SCRUM-42")],
    )
    search = Story(
        name="search-latency",
        spec={
            "source": "alertmanager",
            "title": "search p99 latency above 2s",
            "severity": "medium",
            "service": {"name": "search", "cluster": "demo", "region": "us-east-1"},
        },
        status={
            "phase": "Resolved",
            "occurrences": 1,
            "firstSeen": t(30),
            "lastSeen": t(30),
            "alarmState": "OK",
            "assessment": {
                "decision": "SAFE",
                "action": "restart_service",
                "message": "Latency on search: a restart may help",
                "confidence": 0.6,
                "assessor": "rules",
                "policy": "demo",
                "latencyMs": 2,
                "at": t(29),
            },
            "approval": {
                "required": True,
                "state": "Cancelled",
                "action": "restart_service",
                "target": "us-east-1/demo/search",
                "via": "policy",
                "at": t(22),
                "deadline": t(-1),
            },
            "conditions": [
                condition("Approved", "False", "Recovered", "resolved before a decision", t(22)),
                condition("Resolved", "True", "AlarmOk", "the alert resolved", t(22)),
            ],
        },
        timeline=[
            (t(30), "received", "Triggered", "alert SearchLatency received from alertmanager"),
            (t(29), "approval_requested", "AwaitingApproval", "restart_service needs approval"),
            (t(22), "resolved", "Resolved", "the alert resolved before anyone decided"),
        ],
        events=[],
    )
    orders_alerts = [
        {
            "fingerprint": f"orders-{n}", "title": f"orders pod {n} not ready",
            "severity": "high" if n % 4 == 0 else "medium", "service": "orders",
            "state": "ALARM", "occurrences": 1 + n % 3, "firstSeen": t(15), "lastSeen": t(12),
        }
        for n in range(12)
    ]  # fmt: skip
    orders = Story(
        name="orders-storm",
        spec={
            "source": "alertmanager",
            "title": "orders pods not ready",
            "severity": "medium",
            "service": {"name": "orders", "cluster": "demo", "region": "us-east-1"},
        },
        status={
            "phase": "Escalated",
            "occurrences": 12,
            "firstSeen": t(15),
            "lastSeen": t(12),
            "alarmState": "ALARM",
            "alerts": orders_alerts,
            "alertCount": 12,
            "assessment": {
                "decision": "ESCALATE",
                "action": "notify_team",
                "message": "Twelve pods of orders failing at once",
                "confidence": 0.8,
                "assessor": "gemini",
                "model": "gemini-2.5-flash",
                "latencyMs": 2210,
                "promptTokens": 2980,
                "outputTokens": 120,
                "at": t(14),
            },
            "conditions": [condition("Assessed", "True", "Assessed", "ESCALATE", t(14))],
        },
        timeline=[
            (t(15), "received", "Triggered", "12 alerts of orders grouped into one Incident"),
            (t(14), "escalated", "Escalated", "escalated to a human"),
        ],
        events=[],
    )
    return [checkout, payments, search, orders]


def create_incident(
    api: client.ApiClient,
    namespace: str,
    name: str,
    *,
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body = incident_body(name)
    body["spec"]["fingerprint"] = f"{name}-{uuid.uuid4().hex[:8]}"
    body["spec"]["alarm"]["name"] = name
    body["spec"].update(spec or {})
    objects = client.CustomObjectsApi(api)
    created = objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", body)
    if status:
        created = objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "incidents", name, {"status": status}
        )
    return dict(created)


def post_event(
    api: client.ApiClient, incident: dict[str, Any], when: str, reason: str, kind: str, message: str
) -> None:
    metadata = incident["metadata"]
    client.CoreV1Api(api).create_namespaced_event(
        metadata["namespace"],
        {
            "metadata": {"name": f"{metadata['name']}.{uuid.uuid4().hex[:12]}"},
            "involvedObject": {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Incident",
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "firstTimestamp": when,
            "lastTimestamp": when,
            "count": 1,
            "source": {"component": "incident-operator"},
        },
    )


def timeline_entries(namespace: str, story: Story) -> list[Entry]:
    return [
        Entry(
            incident_id=f"{namespace}/{story.name}",
            ts=f"{when}#{index:03d}",
            kind=kind,
            phase=phase,
            message=message,
        )
        for index, (when, kind, phase, message) in enumerate(story.timeline)
    ]


def record(timeline: Timeline, entries: list[Entry]) -> None:
    """Write timeline entries from a thread of its own: Playwright's sync API
    keeps an event loop running in the test's thread."""
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, timeline.record(entries)).result()


def create_story(api: client.ApiClient, namespace: str, story: Story) -> dict[str, Any]:
    created = create_incident(api, namespace, story.name, spec=story.spec, status=story.status)
    for when, reason, kind, message in story.events:
        post_event(api, created, when, reason, kind, message)
    return created


@dataclass
class Ui:
    url: str
    token: str
    process: subprocess.Popen[bytes]

    def get(self, path: str, **options: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **options.pop("headers", {})}
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=10, **options)


def serve_ui(
    kubeconfig: Path, namespace: str, *, token: str, log: Path, **env: str
) -> Iterator[Ui]:
    """`incident-operator ui` as a process on a free port, once it is ready;
    its output in `log`."""
    port = free_port()
    output = log.open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "incident_operator.cli", "ui",
         "--host", "127.0.0.1", "--port", str(port), "--namespace", namespace],
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "UI_TOKENS": token, **env},
        stdout=output,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    output.close()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, f"the UI exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "the UI did not become ready"
            time.sleep(0.1)
        yield Ui(url=url, token=token, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def now() -> datetime:
    return datetime.now(UTC)

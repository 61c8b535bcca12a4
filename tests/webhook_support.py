"""Helpers for driving the ingest webhook in tests."""

from __future__ import annotations

import copy
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client
from prometheus_client import CollectorRegistry

from incident_operator.config import Settings
from incident_operator.devstack.controlplane import free_port
from incident_operator.ingest.app import create_app
from incident_operator.ingest.policies import PolicyWatch
from incident_operator.ingest.recorder import AlarmRecorder
from incident_operator.models import GROUP, VERSION


def new_token() -> str:
    return secrets.token_urlsafe(24)


class _Replica(httpx.AsyncClient):
    """A client of an in-process webhook; closing it stops the webhook's policy watch."""

    def __init__(self, *, policies: PolicyWatch | None, **options: Any) -> None:
        super().__init__(**options)
        self._policies = policies

    async def aclose(self) -> None:
        await super().aclose()
        self._stop()

    async def __aexit__(self, *exc_info: Any) -> None:
        await super().__aexit__(*exc_info)
        self._stop()

    def _stop(self) -> None:
        if self._policies is not None:
            self._policies.stop()


def webhook(
    api: client.ApiClient, namespace: str, *, token: str, grouping: bool = False, **settings: Any
) -> httpx.AsyncClient:
    """An HTTP client wired to a fresh webhook app (one "replica"); with
    `grouping`, it follows the namespace's ResponsePolicies, as served."""
    config = Settings(incident_namespace=namespace, ingest_tokens=token, **settings)
    policies = None
    if grouping:
        policies = PolicyWatch(api=api, namespace=namespace).start()
        assert policies.wait_synced(10), "the policies were not listed"
    recorder = AlarmRecorder(
        api=api,
        namespace=namespace,
        groups=policies.group if policies is not None else None,
        write_interval=config.ingest_write_interval_seconds,
    )
    app = create_app(settings=config, recorder=recorder, api=api, registry=CollectorRegistry())
    return _Replica(
        policies=policies,
        transport=httpx.ASGITransport(app=app),
        base_url="http://webhook",
        headers={"Authorization": f"Bearer {token}"},
    )


def serve_webhook(
    kubeconfig: Path, namespace: str, *, capture: bool = False, **env: str
) -> tuple[str, subprocess.Popen[str]]:
    """`incident-operator webhook` as a process on a free port, once it is ready;
    `env` on top of this process's environment."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "incident_operator.cli", "webhook",
         "--host", "127.0.0.1", "--port", str(port), "--namespace", namespace],
        env={**os.environ, "KUBECONFIG": str(kubeconfig), **env},
        stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
        stderr=subprocess.STDOUT if capture else subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return url, process
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "webhook did not start"
        time.sleep(0.1)


def incidents(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, "incidents"
    )
    return list(listed["items"])


def occurrences(incident: dict[str, Any]) -> int:
    """An Incident's count: its creation is the first occurrence, and is counted
    in status by the operator's first write (or the webhook's next count)."""
    return int((incident.get("status") or {}).get("occurrences", 1))


def generic_alert(
    service: str = "checkout", *, incident_id: str | None = None, **detail: Any
) -> dict[str, Any]:
    """The serverless agent's POST /alert payload."""
    body: dict[str, Any] = {
        "detail": {
            "service_name": service,
            "cluster_name": "prod",
            "summary": f"{service} is failing health checks",
            "Trigger": {
                "Dimensions": [
                    {"name": "ServiceName", "value": service},
                    {"name": "ClusterName", "value": "prod"},
                ]
            },
            **detail,
        }
    }
    if incident_id is not None:
        body["incident_id"] = incident_id
    return body


def eventbridge_alarm(
    alarm: str = "checkout-cpu-high",
    *,
    state: str = "ALARM",
    event_id: str | None = None,
    service: str = "checkout",
    cluster: str = "prod",
    region: str = "eu-west-1",
) -> dict[str, Any]:
    """A CloudWatch Alarm State Change event, as EventBridge delivers it."""
    arn = f"arn:aws:cloudwatch:{region}:123456789012:alarm:{alarm}"
    return copy.deepcopy(
        {
            "version": "0",
            "id": event_id or str(uuid.uuid4()),
            "detail-type": "CloudWatch Alarm State Change",
            "source": "aws.cloudwatch",
            "account": "123456789012",
            "time": "2026-11-29T10:00:00Z",
            "region": region,
            "resources": [arn],
            "detail": {
                "alarmName": alarm,
                "state": {
                    "value": state,
                    "reason": "Threshold Crossed: 3 datapoints were greater than 90.0",
                    "timestamp": "2026-11-29T10:00:00.000+0000",
                },
                "previousState": {
                    "value": "OK" if state == "ALARM" else "ALARM",
                    "reason": "",
                    "timestamp": "2026-11-29T09:00:00.000+0000",
                },
                "configuration": {
                    "description": "CPU above 90%",
                    "metrics": [
                        {
                            "id": "m1",
                            "metricStat": {
                                "metric": {
                                    "namespace": "AWS/ECS",
                                    "name": "CPUUtilization",
                                    "dimensions": {
                                        "ClusterName": cluster,
                                        "ServiceName": service,
                                    },
                                },
                                "period": 60,
                                "stat": "Average",
                            },
                            "returnData": True,
                        }
                    ],
                },
            },
        }
    )


def alertmanager(*alerts: dict[str, Any], status: str = "firing") -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "incident-operator",
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def am_alert(fingerprint: str, *, service: str = "payments", status: str = "firing") -> dict:
    return {
        "status": status,
        "labels": {"alertname": "HighErrorRate", "service": service, "severity": "critical"},
        "annotations": {"summary": f"{service} 5xx above 5%"},
        "startsAt": "2026-11-29T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    }

"""Evidence for tests: collectors reading moto and the local API server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from aws_fixtures import Aws
from builders import incident as incident_body
from incident_operator.evidence.collector import AwsReads, Context
from incident_operator.models import GROUP, VERSION, Incident


def evidence_context(aws: Aws | None = None, api: client.ApiClient | None = None) -> Context:
    """Collectors' clients: boto3 against moto (region of the fixture), the API server."""

    def make(service: str, region: str) -> Any:
        assert aws is not None, "this test gave the collectors no AWS"
        return aws.client(service)

    return Context(aws=AwsReads(make=make), kube=api, default_cluster="demo")


def checkout(*, namespace: str = "default", **spec: Any) -> Incident:
    """An Incident (not stored) about the moto ECS service demo/checkout."""
    spec.setdefault("service", {"name": "checkout", "cluster": "demo", "region": "us-east-1"})
    spec.setdefault(
        "alarm",
        {
            "name": "checkout-cpu-high",
            "state": "ALARM",
            "metric": "CPUUtilization",
            "dimensions": {"ClusterName": "demo", "ServiceName": "checkout"},
        },
    )
    spec.setdefault("labels", {"namespace": "AWS/ECS", "metric": "CPUUtilization"})
    body = incident_body(**spec)
    body["metadata"] = {
        "name": f"checkout-{uuid.uuid4().hex[:6]}",
        "namespace": namespace,
        "uid": str(uuid.uuid4()),
        "creationTimestamp": datetime.now(UTC).isoformat(),
    }
    return Incident.model_validate(body)


def store(api: client.ApiClient, namespace: str, incident: Incident, **status: Any) -> Incident:
    """`incident` created in the API server (labelled as the webhook labels it), with `status`."""
    objects = client.CustomObjectsApi(api)
    body = incident.to_api()
    body["metadata"] = {
        "name": incident.metadata["name"],
        "labels": {f"{GROUP}/service": incident.spec.service.name},
    }
    body.pop("status", None)
    created = objects.create_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", body)
    if status:
        created = objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "incidents", incident.metadata["name"], {"status": status}
        )
    return Incident.model_validate(created)


def put_cpu(aws: Aws, values: list[float], *, every: timedelta = timedelta(minutes=5)) -> None:
    """`values` as the service's CPUUtilization, the last one a minute ago."""
    cloudwatch = aws.client("cloudwatch", record=False)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=1) - every * (len(values) - 1)
    cloudwatch.put_metric_data(
        Namespace="AWS/ECS",
        MetricData=[
            {
                "MetricName": "CPUUtilization",
                "Dimensions": [
                    {"Name": "ClusterName", "Value": "demo"},
                    {"Name": "ServiceName", "Value": "checkout"},
                ],
                "Timestamp": start + every * index,
                "Value": value,
                "Unit": "Percent",
            }
            for index, value in enumerate(values)
        ],
    )

"""Shared fixtures: one real control plane per test session, a namespace per test."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client import ApiClient

from incident_operator import crd
from incident_operator.devstack.controlplane import ControlPlane
from incident_operator.models import GROUP, VERSION

# Fakes of third-party services and AWS, each a pytest plugin of its own; the
# real Alertmanager (built into the cache) for the interop tests; helm and
# kube-score for the chart's.
pytest_plugins = [
    "fakes.gemini",
    "fakes.slack",
    "fakes.jira",
    "fakes.pagerduty",
    "fakes.receiver",
    "aws_fixtures",
    "alertmanager_support",
    "chart_support",
]


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    plane = ControlPlane.start()
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def api(control_plane: ControlPlane) -> Iterator[ApiClient]:
    api_client = config.new_client_from_config(config_file=str(control_plane.kubeconfig))
    try:
        yield api_client
    finally:
        api_client.close()


@pytest.fixture(scope="session")
def crds_installed(api: ApiClient) -> None:
    """Install the generated CRDs and wait until the API server serves them."""
    extensions = client.ApiextensionsV1Api(api)
    for definition in crd.all_crds():
        extensions.create_custom_resource_definition(definition)
    for definition in crd.all_crds():
        name = definition["metadata"]["name"]
        deadline = time.monotonic() + 30
        while True:
            current = extensions.read_custom_resource_definition(name)
            conditions = {c.type: c.status for c in (current.status.conditions or [])}
            if conditions.get("Established") == "True":
                break
            assert time.monotonic() < deadline, f"{name} not Established: {conditions}"
            time.sleep(0.1)
    # The discovery cache of a fresh kubectl needs the new group to be listed.
    deadline = time.monotonic() + 30
    while True:
        try:
            client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, "incidents")
            return
        except client.ApiException:
            assert time.monotonic() < deadline, "incidents never became listable"
            time.sleep(0.1)


@pytest.fixture
def namespace(api: ApiClient) -> str:
    """A fresh namespace per test. Never deleted: without a controller manager
    deletion would hang in Terminating, and the control plane is thrown away."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def custom(api: ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)

"""The Incident API as the real kube-apiserver enforces it."""

from __future__ import annotations

import pytest
from kubernetes import client

from builders import incident
from incident_operator.devstack.controlplane import ControlPlane
from incident_operator.models import GROUP, VERSION

pytestmark = pytest.mark.usefixtures("crds_installed")


def create(custom: client.CustomObjectsApi, namespace: str, body: dict) -> dict:
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", body)


def test_control_plane_reports_its_real_version(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl("version", "-o", "json").stdout
    assert f'"gitVersion": "{control_plane.binaries.kubernetes_version}"' in out


def test_valid_incident_is_accepted_with_every_field_kept(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    body = incident(labels={"team": "payments"})
    body["spec"]["alarm"]["dimensions"] = {"ServiceName": "checkout", "ClusterName": "prod"}
    body["spec"]["alarm"]["raw"] = '{"detail": {}}'
    created = create(custom, namespace, body)
    # Nothing pruned: the structural schema knows every field the code writes.
    assert created["spec"] == body["spec"]


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("severity", "apocalyptic", "Unsupported value"),
        ("source", "pagerduty", "Unsupported value"),
        ("title", "x" * 257, "Too long"),
    ],
)
def test_invalid_spec_is_rejected(
    custom: client.CustomObjectsApi, namespace: str, field: str, value: str, complaint: str
) -> None:
    with pytest.raises(client.ApiException) as error:
        create(custom, namespace, incident(**{field: value}))
    assert error.value.status == 422
    assert complaint in error.value.body and f"spec.{field}" in error.value.body


def test_oversized_raw_alarm_is_rejected(custom: client.CustomObjectsApi, namespace: str) -> None:
    body = incident()
    body["spec"]["alarm"]["raw"] = "x" * (16 * 1024 + 1)
    with pytest.raises(client.ApiException) as error:
        create(custom, namespace, body)
    assert error.value.status == 422 and "spec.alarm.raw" in error.value.body


def test_status_subresource_enforces_the_message_bound(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    create(custom, namespace, incident("bounded"))
    assessment = {
        "decision": "SAFE",
        "action": "restart_service",
        "confidence": 0.9,
        "assessor": "rules",
    }
    too_long = {"status": {"assessment": {**assessment, "message": "m" * 201}}}
    with pytest.raises(client.ApiException) as error:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "incidents", "bounded", too_long
        )
    assert error.value.status == 422 and "status.assessment.message" in error.value.body
    bad_action = {"status": {"assessment": {**assessment, "message": "ok", "action": "rm -rf"}}}
    with pytest.raises(client.ApiException) as error:
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, "incidents", "bounded", bad_action
        )
    assert error.value.status == 422 and "status.assessment.action" in error.value.body


def test_status_patch_through_the_subresource_works(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    create(custom, namespace, incident("patched"))
    patch = {
        "status": {
            "phase": "Assessing",
            "occurrences": 3,
            "conditions": [
                {
                    "type": "Assessed",
                    "status": "Unknown",
                    "reason": "Assessing",
                    "message": "rules assessor running",
                    "lastTransitionTime": "2026-11-29T10:00:00Z",
                }
            ],
        }
    }
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "incidents", "patched", patch
    )
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", "patched")
    assert got["status"]["phase"] == "Assessing"
    assert got["status"]["occurrences"] == 3
    assert got["status"]["conditions"][0]["reason"] == "Assessing"


def test_status_written_through_the_main_resource_is_ignored(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    create(custom, namespace, incident("guarded"))
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "incidents", "guarded", {"status": {"phase": "Triggered"}}
    )
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "incidents",
        "guarded",
        # The spec cannot change at all (test_crds.py); metadata can.
        {"status": {"phase": "Resolved"}, "metadata": {"labels": {"edited": "yes"}}},
    )
    got = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "incidents", "guarded")
    assert got["metadata"]["labels"] == {"edited": "yes"}
    assert got["status"]["phase"] == "Triggered"


def test_kubectl_get_incidents_shows_the_columns(
    control_plane: ControlPlane, custom: client.CustomObjectsApi, namespace: str
) -> None:
    create(custom, namespace, incident("checkout-cpu-high"))
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        "incidents",
        "checkout-cpu-high",
        {
            "status": {
                "phase": "Remediating",
                "occurrences": 4,
                "alertCount": 3,
                "assessment": {
                    "decision": "SAFE",
                    "action": "restart_service",
                    "message": "CPU saturation; a restart clears it",
                    "confidence": 0.8,
                    "assessor": "rules",
                },
                "acknowledgement": {"by": "alice", "via": "kubectl", "at": "2026-11-30T08:01:00Z"},
                "conditions": [
                    {
                        "type": "Remediated",
                        "status": "Unknown",
                        "reason": "RolloutInProgress",
                        "message": "restarting",
                        "lastTransitionTime": "2026-11-30T08:00:00Z",
                    }
                ],
            }
        },
    )
    out = control_plane.kubectl("get", "inc", "-n", namespace).stdout.splitlines()
    assert out[0].split() == [
        "NAME", "SERVICE", "SEVERITY", "PHASE", "DECISION", "ACTION", "OUTCOME", "ACKED", "ALERTS",
        "COUNT", "AGE",
    ]  # fmt: skip
    assert out[1].split()[:10] == [
        "checkout-cpu-high", "checkout", "high", "Remediating", "SAFE", "restart_service",
        "RolloutInProgress", "alice", "3", "4",
    ]  # fmt: skip
    wide = control_plane.kubectl("get", "incidents", "-n", namespace, "-o", "wide").stdout
    assert "CPU saturation; a restart clears it" in wide


def test_response_policy_defaults_are_valid(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ResponsePolicy",
        "metadata": {"name": "payments"},
        "spec": {"match": {"services": ["checkout*"], "severities": ["critical", "high"]}},
    }
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "responsepolicies", body
    )
    assert created["spec"]["match"]["services"] == ["checkout*"]
    body["metadata"]["name"] = "bad"
    body["spec"]["allowedActions"] = ["delete_cluster"]
    with pytest.raises(client.ApiException) as error:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "responsepolicies", body)
    assert error.value.status == 422

"""The CRDs are generated from the models and committed; the two never drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from builders import incident
from incident_operator import crd
from incident_operator.cli import main
from incident_operator.devstack.controlplane import ControlPlane
from incident_operator.models import GROUP, VERSION

CRD_DIR = Path(__file__).resolve().parents[1] / "crds"


def test_committed_crds_match_the_generator() -> None:
    committed = {path.name: path.read_text() for path in CRD_DIR.glob("*.yaml")}
    generated = {name: crd.render(body) for name, body in crd.file_names().items()}
    assert committed.keys() == generated.keys(), "run `make crds`"
    for name, text in generated.items():
        assert committed[name] == text, f"crds/{name} is stale: run `make crds`"


def test_cli_prints_every_crd(capsys: Any) -> None:
    assert main(["crds"]) == 0
    documents = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert [d["metadata"]["name"] for d in documents] == [
        "incidents.incident-response.dev",
        "responsepolicies.incident-response.dev",
        "silences.incident-response.dev",
    ]


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key in ("properties",):
            for name, sub in node.get(key, {}).items():
                found += _walk(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                found += _walk(node[key], f"{path}[{key}]")
    return found


def test_schemas_are_structural() -> None:
    for definition in crd.all_crds():
        schema = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema):
            assert not {"$ref", "anyOf", "oneOf", "allOf", "title", "default"} & node.keys(), path
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path
            assert node.get("type") != "null", path


def test_incident_crd_shape() -> None:
    spec = crd.incident_crd()["spec"]
    version = spec["versions"][0]
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["inc"]
    assert version["subresources"] == {"status": {}}
    default_columns = [
        c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")
    ]
    assert default_columns == [
        "SERVICE", "SEVERITY", "PHASE", "DECISION", "ACTION", "OUTCOME", "ACKED", "ALERTS", "COUNT",
        "AGE",
    ]  # fmt: skip
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["assessment"]["properties"]["message"]["maxLength"] == 200
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    raw = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["alarm"]
    assert raw["properties"]["raw"]["maxLength"] == 16384


def test_incident_spec_carries_the_immutability_rule() -> None:
    spec = crd.incident_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = spec["properties"]["spec"]["x-kubernetes-validations"]
    assert {"rule": "self == oldSelf", "message": crd.SPEC_IMMUTABLE["message"]} in rules


# --- what the API server does with the rule ------------------------------------


def _create(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return custom.create_namespaced_custom_object(  # type: ignore[no-any-return]
        GROUP, VERSION, namespace, "incidents", incident(name)
    )


@pytest.mark.usefixtures("crds_installed")
def test_an_admin_cannot_change_an_incidents_spec(
    control_plane: ControlPlane, custom: client.CustomObjectsApi, namespace: str
) -> None:
    created = _create(custom, namespace, "observed")
    # kubectl, as the admin (system:masters): the redirect of issue 12, and a JSON patch.
    for kind, patch in [
        ("merge", {"spec": {"service": {"name": "checkout-other"}}}),
        ("json", [{"op": "replace", "path": "/spec/alarm/name", "value": "other"}]),
    ]:
        patched = control_plane.kubectl(
            "patch", "incident", "observed", "-n", namespace, f"--type={kind}",
            "-p", json.dumps(patch), check=False,
        )  # fmt: skip
        assert patched.returncode != 0
        assert "spec is immutable: an Incident records what was observed" in patched.stderr
    # Through the API: a merge patch and a replace, both 422.
    writes = [
        (custom.patch_namespaced_custom_object, {"spec": {"severity": "low"}}),
        (
            custom.replace_namespaced_custom_object,
            {**created, "spec": {**created["spec"], "service": {"name": "checkout-other"}}},
        ),
    ]
    for write, body in writes:
        with pytest.raises(client.ApiException) as refused:
            write(GROUP, VERSION, namespace, "incidents", "observed", body)
        assert refused.value.status == 422
        assert "spec is immutable" in refused.value.body
    current = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "incidents", "observed"
    )
    assert current["spec"] == created["spec"]
    assert current["metadata"]["generation"] == 1


@pytest.mark.usefixtures("crds_installed")
def test_status_and_metadata_stay_writable_and_creation_works(
    control_plane: ControlPlane, custom: client.CustomObjectsApi, namespace: str
) -> None:
    created = _create(custom, namespace, "writable")
    assert created["spec"] == incident("writable")["spec"]
    status = {"status": {"phase": "Assessing", "occurrences": 2}}
    control_plane.kubectl(
        "patch", "incident", "writable", "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip
    # Labels and annotations are not the observation; a patch that restates
    # the spec unchanged is no change either.
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "incidents", "writable",
        {"metadata": {"labels": {"team": "payments"}}, "spec": created["spec"]},
    )  # fmt: skip
    current = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "incidents", "writable"
    )
    assert current["status"]["phase"] == "Assessing"
    assert current["metadata"]["labels"] == {"team": "payments"}
    assert current["spec"] == created["spec"]

"""The CRDs are generated from the models and committed; the two never drift."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from incident_operator import crd
from incident_operator.cli import main

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
    assert default_columns == ["SERVICE", "SEVERITY", "PHASE", "DECISION", "ACTION", "COUNT", "AGE"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["assessment"]["properties"]["message"]["maxLength"] == 200
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]
    raw = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["alarm"]
    assert raw["properties"]["raw"]["maxLength"] == 16384

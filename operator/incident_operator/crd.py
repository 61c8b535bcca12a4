"""CustomResourceDefinitions generated from the pydantic models.

The API server wants a *structural* OpenAPI v3 schema: every node typed, no
`$ref`, no `anyOf` carrying types, no `null` type. pydantic emits JSON Schema,
so `structural()` inlines references, turns `X | None` into plain optional
`X` (we never store nulls: merge patches delete on null) and drops what the
API server would reject or silently apply (titles, defaults).
"""

from __future__ import annotations

from typing import Any

import yaml

from .models import GROUP, VERSION, IncidentSpec, IncidentStatus, ResponsePolicySpec
from .silence import SilenceSpec, SilenceStatus

_DROP = {"title", "default", "$defs"}


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON schema into a Kubernetes structural schema."""
    defs: dict[str, Any] = schema.get("$defs", {})

    def convert(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return convert({**target, **extra})
        if "anyOf" in node:
            variants = [v for v in node["anyOf"] if v.get("type") != "null"]
            if len(variants) != 1:
                raise ValueError(f"cannot express a union in a structural schema: {node}")
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            return convert({**variants[0], **rest})
        if "const" in node:
            node = {**node, "enum": [node["const"]]}
            del node["const"]
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP:
                continue
            if key == "properties":
                out[key] = {name: convert(sub) for name, sub in value.items()}
            elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
                out[key] = convert(value)
            elif key == "additionalProperties":
                # `extra="forbid"` gives `false`: structural schemas express
                # that by simply listing properties (unknowns are pruned).
                continue
            else:
                out[key] = value
        if out.get("type") == "object" and not {"properties", "additionalProperties"} & out.keys():
            # A free-form object (dict[str, Any]) must be kept as sent.
            out["x-kubernetes-preserve-unknown-fields"] = True
        if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out:
            raise ValueError(f"untyped node in schema: {node}")
        # Type and description first: the generated YAML is read by people.
        first = [key for key in ("type", "format", "description") if key in out]
        return {key: out[key] for key in [*first, *(k for k in out if k not in first)]}

    return convert(schema)


def _schema(model: type) -> dict[str, Any]:
    return structural(model.model_json_schema(by_alias=True))  # type: ignore[attr-defined]


def _conditions_as_map(status: dict[str, Any]) -> None:
    # Conditions are keyed by type, as in every built-in API; server-side apply
    # and strategic merges then treat them as a map.
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]


# What was observed does not change: the API server refuses any change to an
# Incident's spec, from every writer (admins included), so what an approval
# was given for and what the timeline tells stay what the alarm said.
SPEC_IMMUTABLE = {
    "rule": "self == oldSelf",
    "message": "spec is immutable: an Incident records what was observed",
}


def incident_crd() -> dict[str, Any]:
    spec = _schema(IncidentSpec)
    spec["x-kubernetes-validations"] = [*spec.get("x-kubernetes-validations", []), SPEC_IMMUTABLE]
    status = _schema(IncidentStatus)
    _conditions_as_map(status)
    # kopf may keep its own bookkeeping under status.kopf; let it.
    status["properties"]["kopf"] = {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    columns = [
        ("Service", "string", ".spec.service.name", 0),
        ("Severity", "string", ".spec.severity", 0),
        ("Phase", "string", ".status.phase", 0),
        ("Decision", "string", ".status.assessment.decision", 0),
        ("Action", "string", ".status.assessment.action", 0),
        # What came of the action: RestartSucceeded, NotNeeded (recovered before
        # it ran), Cooldown, Rejected... so ACTION alone never reads as "done".
        ("Outcome", "string", '.status.conditions[?(@.type=="Remediated")].reason', 0),
        ("Acked", "string", ".status.acknowledgement.by", 0),
        ("Alerts", "integer", ".status.alertCount", 0),
        ("Count", "integer", ".status.occurrences", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("Message", "string", ".status.assessment.message", 1),
    ]
    return _crd(
        kind="Incident",
        plural="incidents",
        short_names=["inc"],
        spec=spec,
        status=status,
        columns=columns,
    )


def response_policy_crd() -> dict[str, Any]:
    columns = [
        ("Services", "string", ".spec.match.services", 0),
        ("Assessor", "string", ".spec.assessor.type", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ]
    return _crd(
        kind="ResponsePolicy",
        plural="responsepolicies",
        short_names=["rpol"],
        spec=_schema(ResponsePolicySpec),
        status=None,
        columns=columns,
    )


def silence_crd() -> dict[str, Any]:
    columns = [
        ("Matchers", "string", ".status.matchers", 0),
        ("State", "string", ".status.state", 0),
        # A string, not a date: kubectl shows a future date as "<invalid>".
        ("Ends", "string", ".status.endsAt", 0),
        ("Muted", "integer", ".status.muted", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("Starts", "string", ".status.startsAt", 1),
        ("Created-By", "string", ".spec.createdBy", 1),
        ("Comment", "string", ".spec.comment", 1),
    ]
    return _crd(
        kind="Silence",
        plural="silences",
        short_names=["sil"],
        spec=_schema(SilenceSpec),
        status=_schema(SilenceStatus),
        columns=columns,
    )


def _crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    spec: dict[str, Any],
    status: dict[str, Any] | None,
    columns: list[tuple[str, str, str, int]],
) -> dict[str, Any]:
    properties: dict[str, Any] = {"spec": spec}
    if status is not None:
        properties["status"] = status
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "required": ["spec"],
                "properties": properties,
            }
        },
        "additionalPrinterColumns": [
            {"name": name, "type": type_, "jsonPath": path, **({"priority": p} if p else {})}
            for name, type_, path, p in columns
        ],
    }
    if status is not None:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
            },
            "versions": [version],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [incident_crd(), response_policy_crd(), silence_crd()]


def render(crd: dict[str, Any]) -> str:
    header = "# Generated by `incident-operator crds`; do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)


def render_all() -> str:
    return "---\n".join(render(crd) for crd in all_crds())


def file_names() -> dict[str, dict[str, Any]]:
    """The committed files under crds/, by name."""
    return {f"{crd['metadata']['name']}.yaml": crd for crd in all_crds()}

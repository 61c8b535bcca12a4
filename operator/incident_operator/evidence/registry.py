"""The evidence collectors: every module in `collectors/`, found at import,
as the action registry finds actions (remediate/registry.py)."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import JsonValue, ValidationError

from ..discovery import discover
from . import collectors as _package
from .collector import Collector

AnyCollector = Collector[Any]


@cache
def collectors() -> dict[str, type[AnyCollector]]:
    """Every collector, by name, in module order."""
    found: dict[str, type[AnyCollector]] = discover(_package, Collector)
    return found


def iam_actions() -> set[str]:
    """Every AWS action the collectors read with (docs/iam-policy.json grants these)."""
    return {action for c in collectors().values() for action in c.iam}


def rbac_rules() -> list[dict[str, Any]]:
    return [rule for c in collectors().values() for rule in c.rbac]


def check_settings(given: dict[str, dict[str, JsonValue]]) -> dict[str, dict[str, JsonValue]]:
    checked: dict[str, dict[str, JsonValue]] = {}
    for name, values in given.items():
        found = collectors().get(name)
        if found is None:
            known = ", ".join(collectors())
            raise ValueError(f"evidence.collectors.{name}: no such collector; known: {known}")
        try:
            model = found.Settings.model_validate(values)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
                for e in error.errors(include_url=False)[:5]
            )
            raise ValueError(f"evidence.collectors.{name}: {problems}") from None
        checked[name] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return checked


def settings_schema() -> dict[str, Any]:
    """`spec.evidence.collectors` of a ResponsePolicy: one optional object per collector."""
    from ..crd import structural

    properties = {}
    for name, cls in collectors().items():
        schema = structural(cls.Settings.model_json_schema(by_alias=True))
        schema["description"] = f"{name}: {cls.summary}"
        properties[name] = schema
    return {"type": "object", "properties": properties}

"""The actions this operator knows: every module in `actions/`, found at import.

Models, CRDs, the LLM's answer schema, the prompt, the guardrails and the
phase machine ask the registry; none of them names an action. Adding an
action is adding a module to `actions/` (and its tests and docs).

Two actions are not plugins, since they act on nothing: `notify_team` (a
human decides) and `ignore`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel, JsonValue, ValidationError

from ..discovery import discover
from . import actions as _package
from .plugin import Action

NOTIFY_TEAM = "notify_team"
IGNORE = "ignore"
VERDICTS: tuple[str, ...] = (NOTIFY_TEAM, IGNORE)
_VERDICT_SUMMARIES = {
    NOTIFY_TEAM: "tell the on-call team and let a human decide",
    IGNORE: "do nothing; the alarm is noise or already resolved",
}

AnyAction = Action[Any, Any, Any]


@cache
def plugins() -> dict[str, type[AnyAction]]:
    """Every action plugin, by name, in module order."""
    found: dict[str, type[AnyAction]] = discover(_package, Action, reserved=VERDICTS)
    _check_parameter_fields(found)
    return found


def plugin(name: str) -> type[AnyAction] | None:
    return plugins().get(name)


@cache
def names() -> tuple[str, ...]:
    return (*plugins(), *VERDICTS)


@cache
def allowed_by_default() -> tuple[str, ...]:
    return (*(n for n, p in plugins().items() if p.allowed_by_default), *VERDICTS)


def summary(name: str) -> str:
    found = plugin(name)
    return found.summary if found else _VERDICT_SUMMARIES[name]


def iam_actions() -> set[str]:
    """Every AWS action the plugins need (docs/iam-policy.json grants these)."""
    return {action for p in plugins().values() for action in p.iam}


# --- parameters and settings -------------------------------------------------


def _message(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}"
        for e in error.errors(include_url=False)[:5]
    )


def check_parameters(action: str, parameters: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """`parameters` as the action's model reads them (camelCase, no nulls); ValueError if not."""
    found = plugin(action)
    if found is None:
        if parameters:
            raise ValueError(f"{action} takes no parameters, got {sorted(parameters)}")
        return {}
    try:
        checked: dict[str, JsonValue] = found.Parameters.model_validate(parameters).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
    except ValidationError as error:
        raise ValueError(f"parameters of {action}: {_message(error)}") from None
    return checked


def parameters(action: str, given: dict[str, JsonValue]) -> BaseModel:
    found = plugin(action)
    if found is None:
        raise KeyError(action)
    model: BaseModel = found.Parameters.model_validate(given)
    return model


def settings(action: str, spec_actions: dict[str, dict[str, JsonValue]]) -> BaseModel:
    """The policy's settings for `action` (its defaults where the policy says nothing)."""
    found = plugin(action)
    if found is None:
        raise KeyError(action)
    model: BaseModel = found.Settings.model_validate(spec_actions.get(action, {}))
    return model


def check_settings(
    spec_actions: dict[str, dict[str, JsonValue]],
) -> dict[str, dict[str, JsonValue]]:
    checked: dict[str, dict[str, JsonValue]] = {}
    for name, given in spec_actions.items():
        found = plugin(name)
        if found is None:
            raise ValueError(f"actions.{name}: no such action; known: {', '.join(plugins())}")
        try:
            model = found.Settings.model_validate(given)
        except ValidationError as error:
            raise ValueError(f"actions.{name}: {_message(error)}") from None
        checked[name] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return checked


def bounds(action: str, given: dict[str, JsonValue], spec_actions: Any) -> str | None:
    """Why an action's parameters are outside the policy's bounds; None: within."""
    found = plugin(action)
    if found is None:
        return None
    return found.bounds(parameters(action, given), settings(action, spec_actions))


def refuses(action: str, target: Any, spec_actions: Any) -> str | None:
    """Why the policy does not allow the action on this target; None: it does."""
    found = plugin(action)
    if found is None:
        return None
    return found.refuses(target, settings(action, spec_actions))


# --- schemas -------------------------------------------------------------------


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    from ..crd import structural

    return structural(model.model_json_schema(by_alias=True))


def _check_parameter_fields(found: dict[str, type[AnyAction]]) -> None:
    """One parameters object serves every action: a field name means one thing."""
    seen: dict[str, tuple[str, Any]] = {}
    for name, cls in found.items():
        for field, schema in _schema(cls.Parameters).get("properties", {}).items():
            other = seen.setdefault(field, (name, schema))
            if other[1] != schema:
                raise ValueError(f"parameter {field} of {name} differs from {other[0]}'s")


def parameters_schema() -> dict[str, Any]:
    """Every action's parameters in one object, each optional (the action says which apply)."""
    properties: dict[str, Any] = {}
    for cls in plugins().values():
        properties.update(_schema(cls.Parameters).get("properties", {}))
    return {"type": "object", "properties": properties}


def settings_schema() -> dict[str, Any]:
    """`spec.actions` of a ResponsePolicy: one optional object per action."""
    properties = {}
    for name, cls in plugins().items():
        schema = _schema(cls.Settings)
        schema["description"] = f"{name}: " + (cls.Settings.__doc__ or "").strip().split("\n")[0]
        if not schema.get("properties"):
            # No settings: an object that keeps nothing. Not `properties: {}`,
            # which the API server stores as absent (a diff on every apply).
            schema.pop("x-kubernetes-preserve-unknown-fields", None)
            schema.pop("properties", None)
        properties[name] = schema
    return {"type": "object", "properties": properties}

"""The rules assessor: the first matching rule decides, deterministically."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from builders import incident
from incident_operator.assess.factory import assess
from incident_operator.assess.rules import RulesAssessor
from incident_operator.models import IncidentSpec, ResponsePolicySpec, Rule
from incident_operator.policy import DEFAULT, Policy


def spec(
    *, severity: str = "high", alarm: str = "checkout-cpu-high", state: str = "ALARM"
) -> IncidentSpec:
    body = incident(severity=severity)["spec"]
    body["alarm"] |= {"name": alarm, "state": state}
    return IncidentSpec.model_validate(body)


def policy(*rules: dict[str, Any], allowed: list[str] | None = None) -> Policy:
    body: dict[str, Any] = {"assessor": {"type": "rules"}, "rules": list(rules)}
    if allowed is not None:
        body["allowedActions"] = allowed
    return Policy("checkout", ResponsePolicySpec.model_validate(body))


@pytest.mark.parametrize(
    ("severity", "decision", "action", "message"),
    [
        (
            "critical",
            "SAFE",
            "restart_service",
            "built-in rule 1 (severity critical, alarm any) -> restart_service",
        ),
        (
            "high",
            "SAFE",
            "restart_service",
            "built-in rule 1 (severity high, alarm any) -> restart_service",
        ),
        (
            "medium",
            "SAFE",
            "notify_team",
            "built-in rule 2 (severity medium, alarm any) -> notify_team",
        ),
        ("low", "SAFE", "ignore", "built-in rule 3 (severity low, alarm any) -> ignore"),
        ("info", "SAFE", "ignore", "built-in rule 3 (severity info, alarm any) -> ignore"),
    ],
)
async def test_without_policy_rules_the_built_in_rules_decide(
    severity: str, decision: str, action: str, message: str
) -> None:
    result = await RulesAssessor().assess(incident=spec(severity=severity), policy=DEFAULT)
    assert (result.decision, result.action, result.message) == (decision, action, message)
    assert result.assessor == "rules"
    assert result.confidence == 1.0
    assert result.policy == DEFAULT.name
    assert result.model is None and result.prompt_tokens is None


@pytest.mark.parametrize("state", ["OK", "INSUFFICIENT_DATA"])
@pytest.mark.parametrize(
    "chosen", [DEFAULT, policy({"action": "restart_service"})], ids=["built-in", "policy"]
)
async def test_an_alarm_that_is_not_firing_is_ignored(state: str, chosen: Policy) -> None:
    result = await RulesAssessor().assess(
        incident=spec(severity="critical", state=state), policy=chosen
    )
    assert (result.decision, result.action) == ("SAFE", "ignore")
    assert result.message == f"alarm state {state}, not ALARM -> ignore"


RULES = policy(
    {"severities": ["critical"], "action": "notify_team", "decision": "ESCALATE"},
    {"severities": ["high"], "alarmNames": ["checkout-*"], "action": "restart_service"},
    {"alarmNames": ["*-latency", "*-errors"], "action": "notify_team"},
    {"severities": ["low", "info"], "action": "ignore"},
)


@pytest.mark.parametrize(
    ("severity", "alarm", "decision", "action", "message"),
    [
        (
            "critical",
            "checkout-cpu-high",
            "ESCALATE",
            "notify_team",
            "rule 1 (severity critical, alarm any) -> ESCALATE notify_team",
        ),
        (
            "high",
            "checkout-cpu-high",
            "SAFE",
            "restart_service",
            "rule 2 (severity high, alarm checkout-*) -> restart_service",
        ),
        # Globs are case-sensitive (fnmatchcase): Checkout-* is not checkout-*.
        (
            "high",
            "Checkout-cpu-high",
            "ESCALATE",
            "notify_team",
            "no rule of policy checkout matched (severity high, alarm Checkout-cpu-high) "
            "-> ESCALATE notify_team",
        ),
        (
            "high",
            "api-errors",
            "SAFE",
            "notify_team",
            "rule 3 (severity any, alarm *-errors) -> notify_team",
        ),
        (
            "low",
            "api-errors",
            "SAFE",
            "notify_team",
            "rule 3 (severity any, alarm *-errors) -> notify_team",
        ),
        ("info", "disk-usage", "SAFE", "ignore", "rule 4 (severity info, alarm any) -> ignore"),
        # Policy rules replace the built-in ones: nothing matches, so a human decides.
        (
            "medium",
            "disk-usage",
            "ESCALATE",
            "notify_team",
            "no rule of policy checkout matched (severity medium, alarm disk-usage) "
            "-> ESCALATE notify_team",
        ),
    ],
)
async def test_the_first_matching_policy_rule_decides(
    severity: str, alarm: str, decision: str, action: str, message: str
) -> None:
    result = await RulesAssessor().assess(
        incident=spec(severity=severity, alarm=alarm), policy=RULES
    )
    assert (result.decision, result.action, result.message) == (decision, action, message)
    assert result.confidence == 1.0
    assert result.policy == "checkout"


async def test_a_long_alarm_name_keeps_the_message_within_bounds() -> None:
    result = await RulesAssessor().assess(
        incident=spec(severity="medium", alarm="x" * 256), policy=RULES
    )
    assert result.decision == "ESCALATE"
    assert len(result.message) <= 200


def test_a_policy_whose_rule_can_never_apply_is_invalid() -> None:
    with pytest.raises(ValidationError, match="not in allowedActions"):
        policy({"action": "restart_service"}, allowed=["notify_team"])
    with pytest.raises(ValidationError, match=r"rules\[0\] matches everything"):
        policy({"action": "ignore"}, {"action": "notify_team", "severities": ["high"]})


def test_a_policy_without_an_assessor_uses_the_rules() -> None:
    # The README's promise: rules unless a policy asks for gemini.
    assert ResponsePolicySpec.model_validate({"rules": [{"action": "ignore"}]}).assessor.type == (
        "rules"
    )


async def test_a_rule_outside_the_allowed_actions_is_overruled_by_the_guardrails() -> None:
    # The API server refuses such a policy; one that got in anyway (written
    # before the check existed) is still held to its allowed actions.
    strict = Policy(
        "checkout",
        ResponsePolicySpec.model_construct(
            **{
                **ResponsePolicySpec().__dict__,
                "rules": [Rule(action="restart_service")],
                "allowed_actions": ["notify_team"],
            }
        ),
    )
    result = await assess(incident=spec(), policy=strict, assessor=RulesAssessor())
    assert (result.decision, result.action) == ("ESCALATE", "notify_team")
    assert result.rationale.startswith(
        "rules proposed restart_service, which policy checkout does not allow"
    )
    assert result.policy == "checkout"
    assert result.at is not None

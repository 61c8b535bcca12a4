"""Guardrails: whatever an assessor answered, only what the policy allows comes out."""

from __future__ import annotations

import math
from typing import Any

import pytest

from incident_operator.assess.guardrails import enforce, escalation
from incident_operator.models import Assessment, ResponsePolicySpec
from incident_operator.policy import Policy

ONLY_NOTIFY = Policy(
    "payments", ResponsePolicySpec.model_validate({"allowedActions": ["notify_team"]})
)
EVERYTHING = Policy("checkout", ResponsePolicySpec())
NOTHING = Policy("frozen", ResponsePolicySpec.model_validate({"allowedActions": []}))


def proposal(**fields: Any) -> Assessment:
    """What an assessor might hand over, unvalidated: the guardrails must not
    rely on the assessor having built a valid model."""
    base: dict[str, Any] = {
        "decision": "SAFE",
        "action": "restart_service",
        "message": "Restart checkout: CPU pinned at 100%.",
        "confidence": 0.9,
        "rationale": "CPU saturation after a deploy; a restart usually clears it.",
        "assessor": "gemini",
        "model": "gemini-2.5-flash",
        "policy": None,
        "latency_ms": 420,
        "prompt_tokens": 300,
        "output_tokens": 40,
        "at": None,
    }
    return Assessment.model_construct(**(base | fields))


def test_an_allowed_action_passes_unchanged() -> None:
    result = enforce(proposal(), EVERYTHING)
    assert (result.decision, result.action) == ("SAFE", "restart_service")
    assert result.message == "Restart checkout: CPU pinned at 100%."
    assert result.confidence == 0.9
    assert result.policy == "checkout"
    assert (result.model, result.prompt_tokens, result.output_tokens) == (
        "gemini-2.5-flash",
        300,
        40,
    )


@pytest.mark.parametrize("action", ["restart_service", "ignore"])
def test_an_action_the_policy_does_not_allow_escalates(action: str) -> None:
    result = enforce(proposal(action=action), ONLY_NOTIFY)
    assert (result.decision, result.action) == ("ESCALATE", "notify_team")
    reason = f"model proposed {action}, which policy payments does not allow"
    assert result.rationale.splitlines()[0] == reason
    # What the model said stays on record, but is no longer the headline.
    assert "model said: Restart checkout: CPU pinned at 100%." in result.rationale
    assert "CPU saturation after a deploy" in result.rationale
    assert result.message == f"Escalated: {reason}"


def test_an_escalation_always_notifies_the_team() -> None:
    result = enforce(proposal(decision="ESCALATE", action="restart_service"), EVERYTHING)
    assert (result.decision, result.action) == ("ESCALATE", "notify_team")
    assert "escalated but proposed restart_service" in result.rationale


def test_escalating_is_possible_even_when_the_policy_allows_nothing() -> None:
    for answer in (proposal(), proposal(decision="ESCALATE", action="notify_team")):
        result = enforce(answer, NOTHING)
        assert (result.decision, result.action) == ("ESCALATE", "notify_team")


def test_the_message_is_one_clean_line_of_at_most_200_characters() -> None:
    dirty = "Restart\x1b[31m now\n\tplease \u202etxt.exe\u200b " + "x" * 400
    result = enforce(proposal(message=dirty), EVERYTHING)
    assert len(result.message) == 200 and result.message.endswith("…")
    assert result.message.startswith("Restart[31m now please txt.exe xxx")
    assert all(c.isprintable() for c in result.message)


def test_an_empty_message_gets_a_readable_one() -> None:
    result = enforce(proposal(message="\x00\x07 "), EVERYTHING)
    assert result.message == "SAFE restart_service"


def test_the_rationale_keeps_paragraphs_but_no_control_characters() -> None:
    result = enforce(proposal(rationale="first\x1b[0m\nsecond\x00\r"), EVERYTHING)
    assert result.rationale == "first[0m\nsecond"


@pytest.mark.parametrize(
    ("given", "clamped"), [(1.7, 1.0), (-0.2, 0.0), (math.nan, 0.0), (0.5, 0.5)]
)
def test_confidence_is_clamped(given: float, clamped: float) -> None:
    assert enforce(proposal(confidence=given), EVERYTHING).confidence == clamped


def test_the_result_is_a_valid_assessment() -> None:
    result = enforce(proposal(message="m" * 999, confidence=3.0), ONLY_NOTIFY)
    assert Assessment.model_validate(result.model_dump()) == result


def test_an_escalation_records_the_reason_and_no_confidence() -> None:
    result = escalation(assessor="gemini", message="Gemini timed out", reason="TimeoutError")
    assert (result.decision, result.action, result.confidence) == ("ESCALATE", "notify_team", 0.0)
    assert result.rationale == "TimeoutError"

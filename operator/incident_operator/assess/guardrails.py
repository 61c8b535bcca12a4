"""The last word on every assessment: hold it to the policy, whatever was said.

An assessor proposes, `enforce` disposes. It runs after every assessor, the
rules one included, so neither a bug nor a manipulated LLM answer can hand
the phase machine an action the policy forbids, parameters outside the
policy's bounds for that action, an escalation that acts, or a message that
breaks `kubectl get` or a Slack post. Out-of-bounds parameters are refused,
not clamped: a human looks at what was proposed and why it was refused.

`escalation()` is the one way to build the fail-safe answer, so every
failure, whichever assessor hit it, reads the same in status and timeline.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Literal

from ..models import MAX_MESSAGE, MAX_TEXT, Assessment
from ..policy import Policy
from ..remediate import registry

# Escalating means a human looks: the team is notified whatever the policy
# allows, since that is the fallback every other safeguard relies on.
ESCALATION_ACTION = registry.NOTIFY_TEAM

# Control (Cc), format (Cf: bidi overrides, zero-width joiners), surrogate and
# private-use characters render as nothing or as something else in terminals
# and chat; in text written by an LLM they are never needed.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co"})
_BLANKS = re.compile(r"\s+")

_WHO: dict[str, str] = {"gemini": "model", "rules": "rules"}


def _visible(text: str, *, keep: str = "") -> str:
    return "".join(c for c in text if c in keep or unicodedata.category(c) not in _INVISIBLE)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clean_message(text: str) -> str:
    """One line of at most MAX_MESSAGE visible characters."""
    # Line breaks and tabs become spaces first, so words do not run together.
    one_line = _BLANKS.sub(" ", text)
    return _clip(_visible(one_line).strip(), MAX_MESSAGE)


def clean_rationale(text: str) -> str:
    """Keeps line breaks (a rationale may have paragraphs), drops the rest."""
    return _clip(_visible(text, keep="\n").strip(), MAX_TEXT)


def escalation(
    *,
    assessor: Literal["rules", "gemini"],
    message: str,
    reason: str,
    policy: str | None = None,
    model: str | None = None,
    latency_ms: int | None = None,
    prompt_tokens: int | None = None,
    output_tokens: int | None = None,
) -> Assessment:
    """Hand the incident to a human. Confidence 0: nothing was assessed."""
    return Assessment(
        decision="ESCALATE",
        action=ESCALATION_ACTION,
        message=clean_message(message),
        confidence=0.0,
        rationale=clean_rationale(reason),
        assessor=assessor,
        policy=policy,
        model=model,
        latency_ms=latency_ms,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
    )


def _clamp(confidence: float) -> float:
    # NaN compares false with everything, so it would slip through min/max.
    if math.isnan(confidence):
        return 0.0
    return min(max(confidence, 0.0), 1.0)


def enforce(assessment: Assessment, policy: Policy) -> Assessment:
    """The assessment as it may be acted on under `policy`."""
    who = _WHO[assessment.assessor]
    decision, action = assessment.decision, assessment.action
    parameters = assessment.parameters
    message, rationale = assessment.message, assessment.rationale
    override: str | None = None
    out_of_bounds = registry.bounds(action, parameters, policy.spec.actions)

    if decision == "SAFE" and action not in policy.spec.allowed_actions:
        override = f"{who} proposed {action}, which policy {policy.name} does not allow"
        message = f"Escalated: {override}"
    elif decision == "SAFE" and out_of_bounds:
        override = f"{who} proposed {action}, but {out_of_bounds} of policy {policy.name}"
        message = f"Escalated: {override}"
    elif decision == "ESCALATE" and action != ESCALATION_ACTION:
        override = f"{who} escalated but proposed {action}; an escalation only notifies the team"
    if override is not None:
        # What the assessor said stays on record, below the reason it was overruled.
        said = f"{who} said: {assessment.message}"
        rationale = "\n".join(part for part in (override, said, assessment.rationale) if part)
        decision, action, parameters = "ESCALATE", ESCALATION_ACTION, {}

    return Assessment.model_validate(
        assessment.model_dump()
        | {
            "decision": decision,
            "action": action,
            "parameters": parameters,
            "message": clean_message(message) or f"{decision} {action}",
            "rationale": clean_rationale(rationale),
            "confidence": _clamp(assessment.confidence),
            "policy": policy.name,
        }
    )

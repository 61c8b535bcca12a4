"""The rules assessor: deterministic decisions from the policy.

The first rule of `policy.spec.rules` whose severities and alarm-name globs
match decides. A policy without rules gets the built-in ones below; a policy
with rules of which none matches escalates, since whoever wrote the rules
did not foresee this alarm and a human should look. An alarm that is not
firing (OK, INSUFFICIENT_DATA) is ignored before any rule is consulted: no
rule was written to restart a service that has recovered.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from typing import Literal

from pydantic import JsonValue

from ..models import AlertEntry, Assessment, IncidentSpec, Rule, Verdict
from ..policy import Policy
from .guardrails import clean_message, clean_rationale

# Expressed as policy rules, so built-in and policy rules match the same way.
BUILT_IN_RULES: tuple[Rule, ...] = (
    Rule(severities=["critical", "high"], action="restart_service"),
    Rule(severities=["medium"], action="notify_team"),
    Rule(severities=["low", "info"], action="ignore"),
)


def _matching_glob(rule: Rule, alarm_name: str) -> str | None:
    """The glob that matched ("any" when the rule names none), or None."""
    if not rule.alarm_names:
        return "any"
    return next((g for g in rule.alarm_names if fnmatch.fnmatchcase(alarm_name, g)), None)


def _outcome(rule: Rule) -> str:
    return rule.action if rule.decision == "SAFE" else f"{rule.decision} {rule.action}"


class RulesAssessor:
    name: Literal["rules", "gemini"] = "rules"

    async def assess(
        self, *, incident: IncidentSpec, policy: Policy, alerts: Sequence[AlertEntry] = ()
    ) -> Assessment:
        started = time.monotonic()
        assessment = self._decide(incident=incident, policy=policy)
        latency_ms = int((time.monotonic() - started) * 1000)
        return assessment.model_copy(update={"latency_ms": latency_ms, "policy": policy.name})

    def _decide(self, *, incident: IncidentSpec, policy: Policy) -> Assessment:
        alarm = incident.alarm
        if alarm.state != "ALARM":
            return self._assessment(
                decision="SAFE",
                action="ignore",
                message=f"alarm state {alarm.state}, not ALARM -> ignore",
                rationale=f"Alarm {alarm.name!r} is not firing; there is nothing to remediate.",
            )

        rules: Sequence[Rule] = policy.spec.rules or BUILT_IN_RULES
        label = "rule" if policy.spec.rules else "built-in rule"
        for number, rule in enumerate(rules, start=1):
            if rule.severities and incident.severity not in rule.severities:
                continue
            glob = _matching_glob(rule, alarm.name)
            if glob is None:
                continue
            severity = incident.severity if rule.severities else "any"
            return self._assessment(
                decision=rule.decision,
                action=rule.action,
                parameters=rule.parameters,
                message=f"{label} {number} (severity {severity}, alarm {glob}) -> {_outcome(rule)}",
                rationale=(
                    f"Policy {policy.name}: {label} {number} of {len(rules)} is the first to "
                    f"match severity {incident.severity} and alarm {alarm.name!r}."
                ),
            )

        return self._assessment(
            decision="ESCALATE",
            action="notify_team",
            message=(
                f"no rule of policy {policy.name} matched "
                f"(severity {incident.severity}, alarm {alarm.name}) -> ESCALATE notify_team"
            ),
            rationale=(
                f"None of the {len(rules)} rules of policy {policy.name} matches severity "
                f"{incident.severity} and alarm {alarm.name!r}; a human should decide."
            ),
        )

    def _assessment(
        self,
        *,
        decision: Verdict,
        action: str,
        message: str,
        rationale: str,
        parameters: dict[str, JsonValue] | None = None,
    ) -> Assessment:
        # Deterministic: the rules are certain of what they say, right or wrong.
        return Assessment(
            decision=decision,
            action=action,
            parameters=parameters or {},
            message=clean_message(message),
            confidence=1.0,
            rationale=clean_rationale(rationale),
            assessor="rules",
        )

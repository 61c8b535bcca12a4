"""The rules assessor: deterministic decisions from the policy.

The first rule of `policy.spec.rules` whose severities and alarm-name globs
match decides. A policy without rules gets the built-in ones below; a policy
with rules of which none matches escalates, since whoever wrote the rules
did not foresee this alarm and a human should look. An alarm that is not
firing (OK, INSUFFICIENT_DATA) is ignored before any rule is consulted: no
rule was written to restart a service that has recovered.

A rule may also ask something of the evidence (`when`): that the service
was deployed within some time (`deployedWithin: 30m`), or that the same
alarm came back often (`recurrences: {atLeast: 3, within: 24h}`). Evidence
that was not gathered (its collector off, failed or too slow) does not
satisfy a condition: the rule does not match, and the next one is asked.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Literal

from pydantic import JsonValue

from ..evidence import Gathered
from ..models import AlertEntry, Assessment, IncidentSpec, Rule, RuleWhen, Verdict, seconds
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


def _evidence_holds(when: RuleWhen | None, evidence: Gathered | None) -> str | None:
    """What the evidence showed that the rule asked for ("deployed 12m ago"),
    "" for a rule that asks nothing, None when it does not hold."""
    if when is None or when.empty:
        return ""
    if evidence is None:
        return None
    said = []
    if when.deployed_within is not None:
        deployed = evidence.deployed_at
        if deployed is None:
            return None
        since = evidence.gathered_at - deployed
        if since > timedelta(seconds=seconds(when.deployed_within)):
            return None
        said.append(f"deployed {int(since.total_seconds() // 60)}m ago")
    if when.recurrences is not None:
        within = when.recurrences.within
        count = evidence.recurrences(timedelta(seconds=seconds(within)))
        if count is None or count < when.recurrences.at_least:
            return None
        said.append(f"{count} earlier in {within}")
    return ", ".join(said)


def _outcome(rule: Rule) -> str:
    return rule.action if rule.decision == "SAFE" else f"{rule.decision} {rule.action}"


class RulesAssessor:
    name: Literal["rules", "gemini"] = "rules"

    async def assess(
        self,
        *,
        incident: IncidentSpec,
        policy: Policy,
        alerts: Sequence[AlertEntry] = (),
        evidence: Gathered | None = None,
    ) -> Assessment:
        started = time.monotonic()
        assessment = self._decide(incident=incident, policy=policy, evidence=evidence)
        latency_ms = int((time.monotonic() - started) * 1000)
        return assessment.model_copy(update={"latency_ms": latency_ms, "policy": policy.name})

    def _decide(
        self, *, incident: IncidentSpec, policy: Policy, evidence: Gathered | None
    ) -> Assessment:
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
            shown = _evidence_holds(rule.when, evidence)
            if shown is None:
                continue
            severity = incident.severity if rule.severities else "any"
            seen = f", {shown}" if shown else ""
            return self._assessment(
                decision=rule.decision,
                action=rule.action,
                parameters=rule.parameters,
                message=f"{label} {number} (severity {severity}, alarm {glob}{seen}) "
                f"-> {_outcome(rule)}",
                rationale=(
                    f"Policy {policy.name}: {label} {number} of {len(rules)} is the first to "
                    f"match severity {incident.severity} and alarm {alarm.name!r}"
                    + (f", with evidence: {shown}." if shown else ".")
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

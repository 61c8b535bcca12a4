"""Escalation chains: who is told, and when, while an escalated Incident
stays unacknowledged (a ResponsePolicy's `escalation`).

Pure, like the phase machine that calls it: from the Incident, its policy's
chain and the time, the next step is either due (a transition within
Escalated that records it in `status.escalation.steps` and as an
`EscalationStep<n>` record, which the channels act on: Slack mentions the
user group in the thread, email writes to the list, PagerDuty pages the
routing key) or not yet (wait until it is). Each step's delay counts from
the escalation, for the first, or from the step before; after the last, the
chain starts over `repeat` times. An acknowledgement or the resolution
stops it. A step is taken once: it is in the status the transition writes,
and every channel finds what it did before (Slack by the record's key,
email by its claim, PagerDuty by its delivery record).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from .models import (
    EscalationPolicy,
    EscalationState,
    EscalationStepTaken,
    Incident,
    Record,
    seconds,
)

REASON = "EscalationStep"


def state(incident: Incident, now: datetime) -> EscalationState:
    """The Incident's escalation so far (for one escalated before chains
    were recorded: since its last transition)."""
    current = incident.status.escalation
    if current is not None:
        return current
    last = incident.status.last_transition
    return EscalationState(since=last.at if last is not None else now)


def next_due(chain: EscalationPolicy, taken: int, since: datetime) -> datetime | None:
    """When the step after `taken` steps is due; None when the chain is done."""
    if taken >= len(chain.steps) * (1 + chain.repeat):
        return None
    delay = sum(seconds(chain.steps[i % len(chain.steps)].after) for i in range(taken + 1))
    return since + timedelta(seconds=delay)


def take(chain: EscalationPolicy, so_far: EscalationState, now: datetime) -> EscalationState:
    """`so_far` with the next step taken now."""
    number = len(so_far.steps) + 1
    index = (number - 1) % len(chain.steps)
    step = chain.steps[index]
    taken = EscalationStepTaken(
        number=number,
        step=index + 1,
        at=now,
        slack_user_group=step.slack_user_group,
        email=step.email,
        pagerduty=step.pagerduty,
    )
    return so_far.model_copy(update={"steps": [*so_far.steps, taken]})


def describe(step: EscalationStepTaken, chain_length: int) -> str:
    told = []
    if step.slack_user_group:
        told.append(f"Slack user group {step.slack_user_group}")
    if step.email:
        told.append(f"email to {', '.join(step.email)}")
    if step.pagerduty:
        told.append(f"PagerDuty ({step.pagerduty})")
    return f"still unacknowledged: escalation step {step.step} of {chain_length}: {'; '.join(told)}"


def reason(step: EscalationStepTaken) -> str:
    return f"{REASON}{step.number}"


def step_of(incident: Incident, record: Record) -> EscalationStepTaken | None:
    """The step an escalation record tells of (channels act on it)."""
    if record.kind != "escalation" or not record.reason.startswith(REASON):
        return None
    escalation = incident.status.escalation
    for step in escalation.steps if escalation else []:
        if reason(step) == record.reason:
            return step
    return None


def latest_step(incident: Incident) -> EscalationStepTaken | None:
    """The step the Incident's latest transition took, if it took one."""
    last = incident.status.last_transition
    for record in last.records if last else []:
        step = step_of(incident, record)
        if step is not None:
            return step
    return None

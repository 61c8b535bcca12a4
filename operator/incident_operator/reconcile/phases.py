"""The phase machine: every transition of an Incident, in this one file.

    Triggered -> Assessing -> [AwaitingApproval] -> Remediating -> Resolved
         |                \\-> Escalated (a human is needed)   \\-> Ignored
         \\-> Silenced (a Silence in force matches) --(it ends)--> Triggered
    any open phase --(alarm back to OK)--> Resolved (quietly from Silenced)

The machine decides; it does not act. A pass is three steps, as
cert-manager's controllers take them:

1. `wants()`: what the decision needs that the Incident cannot tell (an
   intent: assess it, execute its recorded action, verify that action).
2. `gather()`: carry that intent out through the `Ports` (the assessor, the
   remediator) and hand back the `Facts`. The only I/O, and safe to repeat:
   the assessment has no side effect, and an action is claimed in DynamoDB
   before it happens (see remediate/claims.py), so a retry after a crash
   finds the claim instead of acting again.
3. `decide()`: a pure function of the Incident, its policy, the time and the
   facts, returning a `Transition` (the status to write and what to record),
   a `Wait` (look again later) or None (nothing to do).

`advance()` runs the three. Writing status, Events and the timeline is the
caller's job. Every transition is in `decide()` and the functions it calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import JsonValue

from .. import escalation
from ..models import (
    CLOSED_PHASES,
    HANDED_OFF_PHASES,
    SEVERITY_RANK,
    Acknowledgement,
    AlertEntry,
    Approval,
    Assessment,
    Condition,
    ConditionStatus,
    ConditionType,
    EscalationState,
    Incident,
    Phase,
    Record,
    Remediation,
    RemediationPolicy,
)
from ..policy import Policy
from ..remediate import (
    ActionCall,
    ActionRefused,
    AnyTarget,
    OutcomeUnknown,
    Progress,
    Receipt,
    RemediationFailed,
    UnresolvedTarget,
    registry,
    resolve,
)
from ..silence import Silence, muting
from .conditions import get_condition, set_condition

# The message of an Incident whose alarm recovered while it was silenced.
QUIET_RESOLUTION = "resolved quietly: the alarm recovered while silenced"
# How often to look at an action in progress (a rollout, a scaling).
ROLLOUT_POLL_SECONDS = 5.0
# How soon to ask again when an action's outcome was unknown (a timeout).
UNKNOWN_OUTCOME_RETRY_SECONDS = 10.0


@dataclass(frozen=True)
class Defaults:
    """What a target the alarm leaves open defaults to: ECS_CLUSTER_NAME, AWS_REGION."""

    cluster: str | None = None
    region: str = "us-east-1"


class Remediator(Protocol):
    """Carries actions out (remediate/executor.py); a fake in unit tests."""

    async def execute(self, call: ActionCall, *, limits: RemediationPolicy) -> Receipt: ...

    async def verify(self, call: ActionCall, *, receipt: str) -> Progress: ...


@dataclass(frozen=True)
class Ports:
    """What `gather()` acts through, and the defaults of this installation."""

    assess: Callable[[Incident, Policy], Awaitable[Assessment]]
    remediator: Remediator
    default_cluster: str | None = None
    default_region: str = "us-east-1"

    @property
    def defaults(self) -> Defaults:
        return Defaults(cluster=self.default_cluster, region=self.default_region)


@dataclass(frozen=True)
class AssessIt:
    """Intent: ask the policy's assessor about the Incident."""


@dataclass(frozen=True)
class Execute:
    """Intent: carry out the recorded action on its target (claimed first)."""

    target: AnyTarget
    action: str
    parameters: dict[str, JsonValue]


@dataclass(frozen=True)
class Verify:
    """Intent: look at how the action is going (a rollout, a scaling)."""

    target: AnyTarget
    action: str
    parameters: dict[str, JsonValue]
    receipt: str


Intent = AssessIt | Execute | Verify


@dataclass(frozen=True)
class Facts:
    """What `gather()` found out for `decide()`; failures are facts too."""

    assessment: Assessment | None = None
    executed: Receipt | ActionRefused | RemediationFailed | None = None
    progress: Progress | RemediationFailed | None = None


@dataclass
class Transition:
    """A status change, with the records (timeline entries, Events) it makes."""

    phase: Phase
    status: dict[str, Any] = field(default_factory=dict)
    conditions: list[Condition] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    # Look again after this many seconds even if nothing changes.
    wake_after: float | None = None
    # Told to no channel: a silenced alarm's transitions.
    quiet: bool = False


@dataclass(frozen=True)
class Wait:
    seconds: float


Outcome = Transition | Wait | None


class _Builder:
    """Accumulates one transition: conditions and records, then the phase."""

    def __init__(self, incident: Incident, now: datetime) -> None:
        self.now = now
        self.phase = incident.status.phase or "Triggered"
        self.conditions = list(incident.status.conditions)
        self.records: list[Record] = []
        self.status: dict[str, Any] = {}

    def condition(
        self, type: ConditionType, status: ConditionStatus, reason: str, message: str
    ) -> _Builder:
        self.conditions = set_condition(
            self.conditions, type=type, status=status, reason=reason, message=message, now=self.now
        )
        return self

    def record(self, kind: str, reason: str, message: str, *, warning: bool = False) -> _Builder:
        self.records.append(
            Record(kind=kind, reason=reason, message=message[:1024], warning=warning)
        )
        return self

    def set(self, **fields: Any) -> _Builder:
        self.status.update(fields)
        return self

    def to(
        self, phase: Phase, *, wake_after: float | None = None, quiet: bool = False
    ) -> Transition:
        if phase == "Escalated" and self.phase != "Escalated":
            # The escalation chain's clock starts here (escalation.py).
            self.status.setdefault("escalation", EscalationState(since=self.now).to_api())
        return Transition(
            phase=phase,
            status=self.status,
            conditions=self.conditions,
            records=self.records,
            wake_after=wake_after,
            quiet=quiet,
        )


async def advance(
    incident: Incident,
    *,
    policy: Policy,
    ports: Ports,
    now: datetime,
    silences: Sequence[Silence] = (),
) -> Outcome:
    """One pass: gather what the decision needs, then decide."""
    intent = wants(incident, defaults=ports.defaults)
    facts = await gather(intent, incident=incident, policy=policy, ports=ports)
    return decide(
        incident, policy=policy, defaults=ports.defaults, now=now, facts=facts, silences=silences
    )


def wants(incident: Incident, *, defaults: Defaults) -> Intent | None:
    """What the next decision needs done or looked at first; None: nothing."""
    status = incident.status
    phase = status.phase or "Triggered"
    if phase in CLOSED_PHASES or phase in HANDED_OFF_PHASES:
        return None
    if status.alarm_state == "OK" and phase != "Remediating":
        return None  # recovered: nothing to ask anyone
    if phase == "Assessing":
        return AssessIt()
    remediation = status.remediation
    if phase != "Remediating" or remediation is None:
        return None
    try:
        target = _target(incident, defaults, remediation.action)
    except UnresolvedTarget:
        return None  # decide() escalates
    if remediation.target != str(target):
        return None  # decide() escalates: only the recorded target is acted on
    action, parameters = remediation.action, remediation.parameters
    if remediation.result == "Pending":
        return Execute(target, action, parameters)
    if remediation.result == "InProgress" and remediation.receipt:
        return Verify(target, action, parameters, remediation.receipt)
    return None


async def gather(
    intent: Intent | None, *, incident: Incident, policy: Policy, ports: Ports
) -> Facts:
    """Carry the intent out; what happened is handed back as facts."""
    if isinstance(intent, AssessIt):
        return Facts(assessment=await ports.assess(incident, policy))
    if isinstance(intent, Execute):
        try:
            receipt = await ports.remediator.execute(
                _call(intent, incident, policy), limits=policy.spec.remediation
            )
        except (ActionRefused, RemediationFailed) as failure:
            return Facts(executed=failure)
        return Facts(executed=receipt)
    if isinstance(intent, Verify):
        try:
            progress = await ports.remediator.verify(
                _call(intent, incident, policy), receipt=intent.receipt
            )
        except RemediationFailed as failure:
            return Facts(progress=failure)
        return Facts(progress=progress)
    return Facts()


def _call(intent: Execute | Verify, incident: Incident, policy: Policy) -> ActionCall:
    return ActionCall(
        action=intent.action,
        parameters=intent.parameters,
        target=intent.target,
        incident_id=incident.identity,
        alarm=incident.spec,
        settings=policy.spec.actions,
    )


def decide(
    incident: Incident,
    *,
    policy: Policy,
    now: datetime,
    facts: Facts = Facts(),
    defaults: Defaults = Defaults(),
    silences: Sequence[Silence] = (),
) -> Outcome:
    """The next transition, from the Incident, its policy, the time, the facts
    and the Silences of its namespace (in force now or not)."""
    outcome = _decide(
        incident, policy=policy, now=now, facts=facts, defaults=defaults, silences=silences
    )
    return _with_acknowledgement(incident, outcome, now)


def _with_acknowledgement(incident: Incident, outcome: Outcome, now: datetime) -> Outcome:
    """Record an acknowledgement once: the Acknowledged condition, an Event, a
    timeline entry. It rides along with whatever else this pass decides; alone,
    it is a transition to the same phase. A person deciding an approval
    acknowledges too (`_approval` writes it with the decision)."""
    phase = incident.status.phase or "Triggered"
    written = outcome.status.get("acknowledgement") if isinstance(outcome, Transition) else None
    ack = Acknowledgement.model_validate(written) if written else incident.status.acknowledgement
    done = get_condition(incident.status.conditions, "Acknowledged")
    if ack is None or phase in CLOSED_PHASES or (done is not None and done.status == "True"):
        return outcome
    who = f"{ack.by} via {ack.via}"
    if isinstance(outcome, Transition):
        transition = outcome
    else:
        wait = outcome.seconds if isinstance(outcome, Wait) else None
        transition = Transition(
            phase=phase,
            conditions=list(incident.status.conditions),
            wake_after=wait,
            quiet=phase == "Silenced",  # still muted: recorded, told to no one
        )
    transition.conditions = set_condition(
        transition.conditions,
        type="Acknowledged",
        status="True",
        reason="Acknowledged",
        message=f"acknowledged by {who}",
        now=now,
    )
    # First: the person took it before (or as) the rest of this pass happened.
    record = Record(kind="acknowledged", reason="Acknowledged", message=f"acknowledged by {who}")
    transition.records.insert(0, record)
    return transition


def _decide(
    incident: Incident,
    *,
    policy: Policy,
    now: datetime,
    facts: Facts,
    defaults: Defaults,
    silences: Sequence[Silence],
) -> Outcome:
    status = incident.status
    phase = status.phase or "Triggered"
    if phase in CLOSED_PHASES:
        return None
    if status.alarm_state == "OK" and phase != "Remediating":
        return _recovered(incident, now)
    if phase == "Escalated":
        return _escalate_further(incident, policy, now)
    if phase in HANDED_OFF_PHASES:
        return None
    step = _Builder(incident, now)
    if phase == "Silenced":
        return _still_silenced(incident, silences, step=step)
    if phase == "Triggered":
        muted = muting(silences, incident.spec, now)
        if muted is not None:
            step.record("received", "Triggered", _received_message(incident))
            return _silenced(step, muted.name, muted.until, silences)
        step.condition("Assessed", "Unknown", "Assessing", "assessment in progress")
        if status.silence is None:  # else received when it was silenced
            step.record("received", "Triggered", _received_message(incident))
        return step.to("Assessing")
    if phase == "Assessing":
        if facts.assessment is None:
            return None  # nothing gathered: nothing to decide yet
        return _assessed(incident, facts.assessment, policy=policy, defaults=defaults, step=step)
    if phase == "AwaitingApproval":
        worse = _more_severe_alert(incident)
        if worse is not None:
            return _reassess(incident, worse, step)
        return _approval(incident, policy=policy, defaults=defaults, step=step)
    if phase == "Remediating":
        return _remediate(incident, facts, policy=policy, defaults=defaults, step=step)
    return None


def _more_severe_alert(incident: Incident) -> AlertEntry | None:
    """An alert more severe than what was assessed, joined since (a group's)."""
    assessment = incident.status.assessment
    if assessment is None or assessment.severity is None:
        return None
    assessed = SEVERITY_RANK[assessment.severity]
    worse = [a for a in incident.status.alerts if SEVERITY_RANK[a.severity] > assessed]
    return max(worse, key=lambda a: SEVERITY_RANK[a.severity]) if worse else None


def _reassess(incident: Incident, alert: AlertEntry, step: _Builder) -> Transition:
    """Before anything was done: assess again, the pending approval cancelled."""
    approval = incident.status.approval
    if approval is not None and approval.state == "Pending":
        step.set(
            approval=approval.model_copy(update={"state": "Cancelled", "at": step.now}).to_api()
        )
    why = f"a more severe alert joined: {alert.title!r} ({alert.severity})"
    return (
        step.condition("Approved", "False", "Reassessing", f"{why}; assessing again")
        .condition("Assessed", "Unknown", "Assessing", "assessment in progress")
        .record("reassess", "MoreSevereAlert", f"{why}; assessing again")
        .to("Assessing")
    )


def _escalate_further(incident: Incident, policy: Policy, now: datetime) -> Outcome:
    """The policy's next escalation step, if it is due and nobody acknowledged."""
    chain = policy.spec.escalation
    if chain is None or incident.status.acknowledgement is not None:
        return None
    so_far = escalation.state(incident, now)
    due = escalation.next_due(chain, len(so_far.steps), so_far.since)
    if due is None:
        return None  # every step taken
    if now < due:
        return Wait((due - now).total_seconds())
    taken = escalation.take(chain, so_far, now)
    step = taken.steps[-1]
    following = escalation.next_due(chain, len(taken.steps), taken.since)
    return (
        _Builder(incident, now)
        .set(escalation=taken.to_api())
        .record(
            "escalation",
            escalation.reason(step),
            escalation.describe(step, len(chain.steps)),
            warning=True,
        )
        .to(
            "Escalated",
            wake_after=max((following - now).total_seconds(), 0.0) if following else None,
        )
    )


def _received_message(incident: Incident) -> str:
    spec = incident.spec
    return f"{spec.severity} alarm {spec.alarm.name!r} for {spec.service.name} from {spec.source}"


def _silenced(
    step: _Builder, name: str, until: datetime, silences: Sequence[Silence]
) -> Transition:
    """Muted: recorded, counted, looked at again when the silence ends; told to no one."""
    comment = next((s.spec.comment[:200] for s in silences if s.name == name), "")
    said = f"muted by silence {name} until {until:%Y-%m-%dT%H:%M:%SZ}" + (
        f" ({comment})" if comment else ""
    )
    seconds = max((until - step.now).total_seconds(), 0.0)
    return (
        step.set(silence={"name": name, "until": until.isoformat()}, message=said)
        .condition("Silenced", "True", "Silenced", said)
        .record("silenced", "Silenced", said)
        .to("Silenced", wake_after=seconds, quiet=True)
    )


def _still_silenced(incident: Incident, silences: Sequence[Silence], *, step: _Builder) -> Outcome:
    """Silenced until no silence in force matches; then on from Triggered, and told."""
    recorded = incident.status.silence
    muted = muting(silences, incident.spec, step.now)
    if muted is not None:
        if recorded is not None and (recorded.name, recorded.until) == (muted.name, muted.until):
            return Wait((muted.until - step.now).total_seconds())
        return _silenced(step, muted.name, muted.until, silences)  # another, or extended
    name = recorded.name if recorded else "unknown"
    if recorded is None or all(s.name != name for s in silences):
        why = f"silence {name} was deleted"
    elif recorded.until <= step.now:
        why = f"silence {name} ended at {recorded.until:%Y-%m-%dT%H:%M:%SZ}"
    else:
        why = f"silence {name} no longer applies (changed)"
    said = f"{why} and the alarm still fires: {_received_message(incident)}"
    return (
        step.set(message=said)
        .condition("Silenced", "False", "SilenceEnded", why)
        .record("silence_ended", "SilenceEnded", said, warning=True)
        .to("Triggered")
    )


def _recovered(incident: Incident, now: datetime) -> Transition:
    step = _Builder(incident, now)
    phase = incident.status.phase or "Triggered"
    if phase == "Silenced":
        return (
            step.condition("Silenced", "False", "AlarmRecovered", "the alarm recovered")
            .condition("Remediated", "False", "NotNeeded", "the alarm recovered while silenced")
            .condition("Resolved", "True", "AlarmRecovered", "the alarm is back to OK")
            .set(message=QUIET_RESOLUTION)
            .record(
                "resolved", "AlarmRecovered", "alarm recovered while Silenced; resolved quietly"
            )
            .to("Resolved", quiet=True)
        )
    if phase == "AwaitingApproval":
        step.condition("Approved", "False", "Cancelled", "the alarm recovered before a decision")
        approval = incident.status.approval
        if approval is not None and approval.state == "Pending":
            cancelled = approval.model_copy(update={"state": "Cancelled", "at": now})
            step.set(approval=cancelled.to_api())
    if phase in ("Triggered", "Assessing", "AwaitingApproval"):
        step.condition("Remediated", "False", "NotNeeded", "the alarm recovered on its own")
    return (
        step.condition("Resolved", "True", "AlarmRecovered", "the alarm is back to OK")
        .set(message="resolved: the alarm is back to OK")
        .record("resolved", "AlarmRecovered", f"alarm recovered while {phase}; resolved")
        .to("Resolved")
    )


def _assessed(
    incident: Incident,
    assessment: Assessment,
    *,
    policy: Policy,
    defaults: Defaults,
    step: _Builder,
) -> Outcome:
    step.set(assessment=assessment.to_api(), message=assessment.message)
    step.condition(
        "Assessed",
        "True",
        "Escalate" if assessment.decision == "ESCALATE" else "Safe",
        f"{assessment.assessor}: {assessment.decision} {assessment.action}: {assessment.message}",
    )
    step.record(
        "assessment",
        "Assessed",
        f"{assessment.assessor}"
        + (f" ({assessment.model})" if assessment.model else "")
        + f" decided {assessment.decision} {assessment.action} "
        f"with confidence {assessment.confidence:.2f} under policy {policy.name}: "
        f"{assessment.message}",
    )
    if assessment.decision == "ESCALATE" or assessment.action == registry.NOTIFY_TEAM:
        reason = "Escalated" if assessment.decision == "ESCALATE" else "NotifyTeam"
        return step.record("escalated", reason, assessment.message, warning=True).to("Escalated")
    if assessment.action == registry.IGNORE:
        return step.record("ignored", "Ignored", assessment.message).to("Ignored")
    # An action plugin's (guardrails.enforce allowed it, parameters and all).
    try:
        target = _target(incident, defaults, assessment.action)
    except UnresolvedTarget as why:
        return _escalate(step, "NoTarget", f"cannot {assessment.action}: {why}")
    refused = registry.refuses(assessment.action, target, policy.spec.actions)
    if refused:
        return _escalate(step, "OutOfBounds", f"policy {policy.name}: {refused}")
    what = _what(assessment.action, target, assessment.parameters)
    if assessment.action in policy.spec.approval.required_for:
        deadline = step.now + timedelta(seconds=policy.spec.approval.timeout_seconds)
        by = f"{deadline:%Y-%m-%dT%H:%M:%SZ}"
        rules = policy.spec.approval
        approval = Approval(
            required=True,
            state="Pending",
            action=assessment.action,
            parameters=assessment.parameters,
            target=str(target),
            deadline=deadline,
            approvers=rules.approvers,
            approver_group=rules.approver_group,
        )
        return (
            step.set(approval=approval.to_api())
            .condition(
                "Approved",
                "Unknown",
                "Pending",
                f"waiting for approval until {by}",
            )
            .record(
                "approval_requested",
                "ApprovalRequested",
                f"{what} needs approval (policy {policy.name}) by {by}",
            )
            .to("AwaitingApproval", wake_after=policy.spec.approval.timeout_seconds)
        )
    approval = Approval(
        required=False,
        state="Approved",
        via="policy",
        at=step.now,
        action=assessment.action,
        parameters=assessment.parameters,
        target=str(target),
    )
    step.set(approval=approval.to_api())
    step.condition("Approved", "True", "NotRequired", f"policy {policy.name} needs no approval")
    return _start_remediation(
        step,
        action=assessment.action,
        parameters=assessment.parameters,
        target=target,
        policy=policy,
    )


def _approval(incident: Incident, *, policy: Policy, defaults: Defaults, step: _Builder) -> Outcome:
    approval = incident.status.approval
    assessment = incident.status.assessment
    if approval is None or assessment is None:  # written by hand, or lost: ask again
        return step.to("Assessing")
    if approval.state in ("Approved", "Rejected"):
        _implied_acknowledgement(incident, approval, step)
    if approval.state == "Approved":
        who = f"{approval.by or 'someone'} via {approval.via or 'unknown'}"
        step.condition("Approved", "True", "Approved", f"approved by {who}")
        step.record("approval", "Approved", f"{assessment.action} approved by {who}")
        return _approved(
            incident, approval, assessment, defaults=defaults, policy=policy, step=step
        )
    if approval.state == "Rejected":
        who = f"{approval.by or 'someone'} via {approval.via or 'unknown'}"
        step.condition("Approved", "False", "Rejected", f"rejected by {who}")
        step.record("approval", "Rejected", f"{assessment.action} rejected by {who}")
        return _escalate(
            step, "ApprovalRejected", f"{assessment.action} rejected by {who}; over to a human"
        )
    deadline = approval.deadline
    if approval.state == "Pending" and deadline is not None and step.now < deadline:
        return Wait((deadline - step.now).total_seconds())
    # Expired (or a pending approval without a deadline, which cannot expire
    # on its own): the policy says what happens now.
    expired = approval.model_copy(update={"state": "Expired", "via": "timeout", "at": step.now})
    step.set(approval=expired.to_api())
    step.condition("Approved", "False", "Expired", "no decision before the deadline")
    on_timeout = policy.spec.approval.on_timeout
    step.record("approval", "Expired", f"approval timed out; policy says {on_timeout}")
    if on_timeout == "approve":
        return _approved(
            incident, approval, assessment, defaults=defaults, policy=policy, step=step
        )
    if on_timeout == "ignore":
        return step.record("ignored", "Ignored", "approval timed out; ignored").to("Ignored")
    return _escalate(step, "ApprovalExpired", "approval timed out; over to a human")


def _implied_acknowledgement(incident: Incident, approval: Approval, step: _Builder) -> None:
    """A person who approves or rejects has taken the Incident."""
    if incident.status.acknowledgement is not None or approval.via not in ("slack", "kubectl"):
        return
    if not approval.by:
        return
    implied = Acknowledgement(by=approval.by, at=approval.at or step.now, via="approval")
    step.set(acknowledgement=implied.to_api())


def _approved(
    incident: Incident,
    approval: Approval,
    assessment: Assessment,
    *,
    defaults: Defaults,
    policy: Policy,
    step: _Builder,
) -> Transition:
    """Act on an approval only for what it approved: this action, with these
    parameters, on this target.

    The approval recorded both when it was asked for; if the Incident now
    means something else (an edited spec, a changed ECS_CLUSTER_NAME, an
    approval written by hand without them), nobody approved what would be
    done, so it goes to a human instead.
    """
    action, parameters = assessment.action, assessment.parameters
    try:
        target = _target(incident, defaults, action)
    except UnresolvedTarget as why:
        return _escalate(step, "NoTarget", f"cannot {action}: {why}")
    approved = (approval.action, approval.target, approval.parameters)
    if approved != (action, str(target), parameters):
        said = f"{approval.action or 'no action'} of {approval.target or 'no target'}"
        if approval.parameters:
            said += f" with {_parameters(approval.parameters)}"
        wanted = f"{action} of {target}" + (
            f" with {_parameters(parameters)}" if parameters else ""
        )
        return _escalate(
            step,
            "ApprovalMismatch",
            f"the approval was for {said}, not {wanted}; nothing done",
        )
    return _start_remediation(
        step, action=action, parameters=parameters, target=target, policy=policy
    )


def _start_remediation(
    step: _Builder,
    *,
    action: str,
    parameters: dict[str, JsonValue],
    target: AnyTarget,
    policy: Policy,
) -> Transition:
    # The policy in force now has the last word, whatever was approved before.
    if action not in policy.spec.allowed_actions:
        return _escalate(
            step, "ActionNotAllowed", f"policy {policy.name} does not allow {action} now"
        )
    out_of_bounds = registry.refuses(action, target, policy.spec.actions) or registry.bounds(
        action, parameters, policy.spec.actions
    )
    if out_of_bounds:
        return _escalate(step, "OutOfBounds", f"policy {policy.name}: {out_of_bounds}")
    # The intent is written before the action: if we die after this patch,
    # the next run continues the action (and the claim in DynamoDB makes a
    # repeated call a no-op), instead of forgetting it was wanted.
    intent = Remediation(action=action, parameters=parameters, target=str(target), result="Pending")
    what = _what(action, target, parameters)
    return (
        step.set(remediation=intent.to_api())
        .condition("Remediated", "Unknown", "Pending", f"{what} about to start")
        .to("Remediating")
    )


def _remediate(
    incident: Incident, facts: Facts, *, policy: Policy, defaults: Defaults, step: _Builder
) -> Outcome:
    remediation = incident.status.remediation
    if remediation is None:
        return _escalate(step, "NoRemediation", "remediating without a recorded action or target")
    try:
        target = _target(incident, defaults, remediation.action)
    except UnresolvedTarget as why:
        return _escalate(step, "NoTarget", f"cannot {remediation.action}: {why}")
    if remediation.target != str(target):
        # Only what the intent names is acted on (and followed).
        return _escalate(
            step,
            "TargetChanged",
            f"the recorded intent is for {remediation.target}, the Incident now means {target}",
        )
    limits = policy.spec.remediation
    noun = _noun(remediation.action)
    what = _what(remediation.action, target, remediation.parameters)
    if remediation.result == "Pending":
        executed = facts.executed
        if executed is None:
            return None  # nothing gathered: nothing to decide yet
        if isinstance(executed, OutcomeUnknown):
            unknown = executed
            # Not a failure yet: the claim is kept and the next call settles
            # it (adopts the action, or takes it). Give up only past the
            # rollout timeout, counted from the recorded intent.
            pending = get_condition(incident.status.conditions, "Remediated")
            since = pending.last_transition_time if pending else step.now
            if step.now - since < timedelta(seconds=limits.rollout_timeout_seconds):
                return Wait(UNKNOWN_OUTCOME_RETRY_SECONDS)
            step.condition("Remediated", "False", "OutcomeUnknown", str(unknown))
            return _escalate(step, "OutcomeUnknown", f"outcome of the {what} unknown: {unknown}")
        if isinstance(executed, ActionRefused):
            refused = executed
            failed = remediation.model_copy(update={"result": "Refused", "message": str(refused)})
            step.set(remediation=failed.to_api())
            step.condition("Remediated", "False", refused.reason, str(refused))
            return _escalate(step, refused.reason, f"{what} refused: {refused}")
        if isinstance(executed, RemediationFailed):
            error = executed
            failed = remediation.model_copy(update={"result": "Failed", "message": str(error)})
            step.set(remediation=failed.to_api())
            step.condition("Remediated", "False", "ActionFailed", str(error))
            return _escalate(step, "ActionFailed", f"{what} failed: {error}")
        receipt = executed
        in_progress = remediation.model_copy(
            update={
                "result": "InProgress",
                "receipt": receipt.ref,
                "started_at": receipt.started_at,
            }
        )
        return (
            step.set(remediation=in_progress.to_api())
            .condition("Remediated", "Unknown", f"{noun}InProgress", f"{what} in progress")
            .record("action_started", f"{noun}Started", f"{what} started: {receipt.ref}")
            .to("Remediating", wake_after=ROLLOUT_POLL_SECONDS)
        )
    if remediation.result == "InProgress" and remediation.receipt:
        looked = facts.progress
        if looked is None:
            return None  # nothing gathered: nothing to decide yet
        progress: Progress
        if isinstance(looked, OutcomeUnknown):
            progress = "InProgress"  # cannot look now (AWS throttled, say): look again
        elif isinstance(looked, RemediationFailed):
            error = looked
            failed = remediation.model_copy(
                update={"result": "Failed", "finished_at": step.now, "message": str(error)}
            )
            step.set(remediation=failed.to_api())
            step.condition("Remediated", "False", "ProgressUnknown", str(error))
            return _escalate(step, "ProgressUnknown", f"cannot follow the {what}: {error}")
        else:
            progress = looked
        if progress == "InProgress":
            started = remediation.started_at or step.now
            timeout = timedelta(seconds=limits.rollout_timeout_seconds)
            if step.now - started < timeout:
                return Wait(ROLLOUT_POLL_SECONDS)
            progress = "Failed"
            outcome, message = "TimedOut", f"{what} not done after {timeout}"
        elif progress == "Failed":
            outcome, message = "Failed", f"{what} failed"
        else:
            outcome, message = "Succeeded", f"{what} completed"
        finished = remediation.model_copy(
            update={"result": outcome, "finished_at": step.now, "message": message}
        )
        step.set(remediation=finished.to_api(), message=message)
        step.record("action_finished", f"{noun}{outcome}", message, warning=progress == "Failed")
        if progress == "Succeeded":
            return (
                step.condition("Remediated", "True", f"{noun}Succeeded", message)
                .condition("Resolved", "True", "Remediated", message)
                .record("resolved", "Remediated", f"resolved by the {what}")
                .to("Resolved")
            )
        step.condition("Remediated", "False", f"{noun}{outcome}", message)
        return _escalate(step, f"{noun}{outcome}", message)
    return _escalate(step, "UnknownRemediationState", f"remediation state {remediation.result}")


def _escalate(step: _Builder, reason: str, message: str) -> Transition:
    return (
        step.set(message=message).record("escalated", reason, message, warning=True).to("Escalated")
    )


def _target(incident: Incident, defaults: Defaults, action: str) -> AnyTarget:
    """What `action` would act on; UnresolvedTarget if the alarm names nothing it acts on."""
    target = resolve(
        incident.spec.service,
        default_cluster=defaults.cluster,
        default_region=defaults.region,
    )
    plugin = registry.plugin(action)
    if plugin is not None and not isinstance(target, plugin.targets):
        raise UnresolvedTarget(f"{action} does not act on {target}")
    return target


def _noun(action: str) -> str:
    plugin = registry.plugin(action)
    return plugin.noun if plugin else "Action"


def _parameters(parameters: dict[str, JsonValue]) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted(parameters.items()))


def _what(action: str, target: AnyTarget, parameters: dict[str, JsonValue]) -> str:
    """The action on its target in words: "restart of r/c/s", "scale of r/c/s to 4 tasks"."""
    plugin = registry.plugin(action)
    if plugin is None:
        return f"{action} of {target}"
    return plugin.describe(target, plugin.Parameters.model_validate(parameters))

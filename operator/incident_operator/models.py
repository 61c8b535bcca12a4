"""The API: pydantic models that are also the CRD schema.

`incident-operator crds` turns these into CustomResourceDefinitions (see
`crd.py`), so a bound written here (a maximum length, an enum) is enforced by
the API server for every writer, not only by this code. Field names are
camelCase on the wire, as Kubernetes conventions want, and snake_case in
Python.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    JsonValue,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP = "incident-response.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

Severity = Literal["critical", "high", "medium", "low", "info"]
# Higher is more severe.
SEVERITY_RANK: dict[str, int] = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
Source = Literal["cloudwatch", "alertmanager", "sns", "generic"]
AlarmState = Literal["ALARM", "OK", "INSUFFICIENT_DATA"]
Phase = Literal[
    "Triggered",
    "Assessing",
    "AwaitingApproval",
    "Remediating",
    "Resolved",
    "Escalated",
    "Ignored",
    "Failed",
    "Silenced",
]
# Closed: nothing more will happen; the next alarm opens a new Incident.
CLOSED_PHASES: frozenset[str] = frozenset({"Resolved", "Failed"})
# Handed off: the operator's part is done (a human has it, or it is ignored);
# repeats still count here, and a recovery (alarm OK) resolves it.
HANDED_OFF_PHASES: frozenset[str] = frozenset({"Escalated", "Ignored"})
TERMINAL_PHASES: frozenset[str] = CLOSED_PHASES | HANDED_OFF_PHASES
Verdict = Literal["SAFE", "ESCALATE"]
ApprovalState = Literal["Pending", "Approved", "Rejected", "Expired", "Cancelled"]
# In the order they are kept in status (and shown by kubectl describe).
ConditionType = Literal[
    "Assessed", "Acknowledged", "Approved", "Remediated", "Notified", "Resolved", "Silenced"
]
ConditionStatus = Literal["True", "False", "Unknown"]

# Bounds. They keep one noisy alarm from filling etcd (an object is capped at
# about 1.5 MiB there) and keep `kubectl get` readable.
MAX_RAW_ALARM = 16 * 1024
MAX_MESSAGE = 200
MAX_TEXT = 4096
MAX_NAME = 256
# Service and cluster may be ARNs (an ECS service ARN is at most about 570
# characters): long enough that an identifier is never cut, which could make
# two services one.
MAX_IDENTIFIER = 1024
# Finished Incidents are deleted after a week by default (ResponsePolicy
# `retention`), so etcd stays small however long the operator runs.
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600
MAX_RETENTION_SECONDS = 3650 * 24 * 3600
# Alerts listed in one Incident's status (a storm grouped into it); more are counted.
MAX_ALERTS = 100
# Escalation steps taken at most: ten steps, each repeated up to ten times.
MAX_ESCALATION_STEPS = 110

# No control, format (bidi overrides, zero-width) or private-use characters,
# nor line/paragraph separators (lone surrogates are refused at ingest): a
# name must read as what it is. `\0` in a service reached ECS, and U+202E
# made `kubectl get` show a cluster name backwards. The API server holds
# every writer to this.
VISIBLE = r"^[^\p{Cc}\p{Cf}\p{Co}\p{Zl}\p{Zp}]*$"

ShortText = Annotated[str, Field(max_length=MAX_NAME)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
# Names people read and code matches on (alarm names, labels).
Name = Annotated[str, Field(max_length=MAX_NAME, pattern=VISIBLE)]
# What identifies a target: never cut, never with invisible characters.
Identifier = Annotated[str, Field(min_length=1, max_length=MAX_IDENTIFIER, pattern=VISIBLE)]
# A span of time as people write it: 90s, 5m, 2h, 1h30m (no unit of 0, so
# never nothing).
DURATION = r"^([1-9][0-9]{0,5}h)?([1-9][0-9]{0,5}m)?([1-9][0-9]{0,5}s)?$"
Duration = Annotated[str, Field(min_length=2, max_length=24, pattern=DURATION)]


def parse_duration(text: str) -> timedelta:
    """A Duration as a timedelta: "1h30m" is 90 minutes (ValueError for anything else)."""
    found = re.fullmatch(DURATION, text)
    if found is None or not text:
        raise ValueError(f"not a duration like 90s, 5m, 2h or 1h30m: {text!r}")
    hours, minutes, secs = (int(part[:-1]) if part else 0 for part in found.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=secs)


def seconds(duration: str) -> int:
    """A Duration in seconds: "5m" is 300."""
    return int(parse_duration(duration).total_seconds())


# --- Actions: named here, defined by the plugins in remediate/actions/ ---------
#
# The API does not list the actions: `notify_team` and `ignore` plus every
# plugin's name are valid, and the CRD's enum, the LLM's answer schema and
# the bounds of each action's parameters and policy settings are made from
# the registry when a schema is generated (see `_FromRegistry`). The registry
# is imported late, inside the hooks: the plugins build on these models.


class _FromRegistry:
    """Annotated metadata: a field's schema and checks come from the action registry.

    `what` is one of: "name" (an action's name), "parameters" (an action's
    parameters: every plugin's parameter fields, each optional), "settings"
    (per-action policy settings: one optional object per plugin), "collectors"
    (per-collector evidence settings, from evidence/registry.py).
    """

    def __init__(self, what: Literal["name", "parameters", "settings", "collectors"]) -> None:
        self.what = what

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        from .remediate import registry

        schema = dict(handler(core_schema))
        if self.what == "name":
            schema["enum"] = list(registry.names())
        elif self.what == "parameters":
            schema = {**registry.parameters_schema(), "description": schema.get("description", "")}
        elif self.what == "collectors":
            from .evidence import registry as collectors

            schema = {**collectors.settings_schema(), "description": schema.get("description", "")}
        else:
            schema = {**registry.settings_schema(), "description": schema.get("description", "")}
        return schema


def _known_action(name: str) -> str:
    from .remediate import registry

    if name not in registry.names():
        raise ValueError(f"unknown action {name!r}; known: {', '.join(registry.names())}")
    return name


ActionName = Annotated[
    str, Field(max_length=64), AfterValidator(_known_action), _FromRegistry("name")
]
# Checked against the action's own parameter model where the action is known
# (Decision, Rule, Approval, Remediation): see `_parameters_fit`.
Parameters = Annotated[dict[str, JsonValue], Field(max_length=16), _FromRegistry("parameters")]


def _parameters_fit(action: str, parameters: dict[str, JsonValue]) -> dict[str, JsonValue]:
    from .remediate import registry

    return registry.check_parameters(action, parameters)


class Model(BaseModel):
    """Base for every API model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )

    def to_api(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- Incident.spec: what was observed, written by the ingest webhook --------


class ServiceRef(Model):
    """The service the alarm is about, as the alarm named it.

    The target acted on is resolved from it (`remediate/target.py`): ARNs and
    names of the same ECS service are one target.
    """

    name: Identifier = Field(
        description="ECS service name or ARN; the Deployment's name for platform kubernetes."
    )
    cluster: Identifier | None = Field(
        None, description="ECS cluster name or ARN; ECS_CLUSTER_NAME if unset."
    )
    region: Annotated[str, Field(max_length=32, pattern=VISIBLE)] | None = Field(
        None, description="AWS region."
    )
    namespace: Annotated[str, Field(max_length=63, pattern=VISIBLE)] | None = Field(
        None, description="The Deployment's namespace (platform kubernetes)."
    )
    platform: Literal["ecs", "kubernetes", "none"] = Field(
        "ecs",
        description="Where the service runs: an ECS service, a Kubernetes Deployment, or "
        "none: the alarm names no service (the name comes from its metric namespace, or is "
        "'unknown'); notified and escalated, never acted on.",
    )


class Alarm(Model):
    """The alarm as the monitoring system described it."""

    name: Name = Field(description="Alarm or alert name.")
    state: AlarmState = Field("ALARM", description="Alarm state when first received.")
    reason: Text | None = Field(None, description="Why the alarm fired, as the source said.")
    metric: ShortText | None = Field(None, description="Metric name, when there is one.")
    dimensions: dict[str, Name] = Field(
        default_factory=dict,
        max_length=32,
        description="Metric dimensions or alert labels.",
    )
    starts_at: datetime | None = Field(None, description="When the source says it started.")
    arn: Annotated[str, Field(max_length=2048)] | None = Field(None, description="Alarm ARN.")
    raw: Annotated[str, Field(max_length=MAX_RAW_ALARM)] | None = Field(
        None,
        description=f"The received payload as JSON text, cut to {MAX_RAW_ALARM} characters.",
    )


class IncidentSpec(Model):
    """What was observed. Written once by the ingest webhook."""

    source: Source = Field(description="Which ingest endpoint received the alarm.")
    fingerprint: Annotated[str, Field(min_length=1, max_length=1024)] = Field(
        description="Dedup key: alarm ARN, Alertmanager fingerprint, incident_id, or a hash."
    )
    title: ShortText = Field(description="One-line title.")
    summary: Text = Field("", description="What the alarm says, for humans and the assessor.")
    severity: Severity = Field("medium", description="Normalized severity.")
    service: ServiceRef
    alarm: Alarm
    labels: dict[str, Name] = Field(
        default_factory=dict,
        max_length=64,
        description="Labels from the source, used by ResponsePolicy matching.",
    )


# --- Incident.status: what the operator and approvers did -------------------


class Decision(Model):
    """An assessor's verdict. Also the response schema the LLM must fill."""

    decision: Verdict = Field(description="SAFE to act automatically, or ESCALATE to a human.")
    action: ActionName = Field(description="What to do.")
    parameters: Parameters = Field(
        default_factory=dict,
        description="The action's parameters (see each action's own), within the policy's bounds.",
    )
    message: Annotated[str, Field(max_length=MAX_MESSAGE)] = Field(
        description="One short sentence for the on-call engineer."
    )
    confidence: Annotated[float, Field(ge=0.0, le=1.0)] = Field(description="0 to 1.")
    rationale: Annotated[str, Field(max_length=MAX_TEXT)] = Field(
        "", description="Why, in a few sentences."
    )

    @model_validator(mode="after")
    def parameters_fit(self) -> Decision:
        self.parameters = _parameters_fit(self.action, self.parameters)
        return self


# --- Evidence: what read-only collectors saw before the assessment ----------
#
# Gathered once per assessment (evidence/), kept here as a compact summary:
# each collector's one line, and the two facts the rules use. What the
# collectors saw in full goes to the assessor only (quoted data for Gemini).

MAX_EVIDENCE_ITEMS = 8
MAX_EVIDENCE_LINE = 512
CollectorName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]


class EvidenceItem(Model):
    """What one collector found, in one line (untrusted text: it quotes logs and events)."""

    collector: CollectorName
    status: Literal["ok", "failed", "timedOut", "skipped"] = Field(
        description="ok; failed or timedOut (recorded, never blocking); skipped: it does not "
        "apply to this Incident (no log group, not an ECS service...)."
    )
    summary: Annotated[str, Field(max_length=MAX_EVIDENCE_LINE)] = Field(
        "", description="What it saw, or why it failed or was skipped."
    )
    elapsed_ms: Annotated[int, Field(ge=0)] | None = None


class Evidence(Model):
    """The evidence an assessment was made with."""

    gathered_at: datetime
    elapsed_ms: Annotated[int, Field(ge=0)] = Field(description="Time spent gathering it.")
    budget_ms: Annotated[int, Field(ge=0)] = Field(description="The time it was allowed.")
    items: list[EvidenceItem] = Field(default_factory=list, max_length=MAX_EVIDENCE_ITEMS)
    deployed_at: datetime | None = Field(
        None, description="When the service's latest deployment started, if a collector saw it."
    )
    recurrences: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description="Earlier Incidents of the same service and alarm in the history window.",
    )


class Assessment(Decision):
    """A Decision plus who made it and at what cost."""

    assessor: Literal["rules", "gemini"] = Field(description="Which assessor decided.")
    model: ShortText | None = Field(None, description="LLM model name, when one was used.")
    policy: ShortText | None = Field(None, description="The ResponsePolicy that applied.")
    latency_ms: Annotated[int, Field(ge=0)] | None = Field(None, description="Assessment time.")
    prompt_tokens: Annotated[int, Field(ge=0)] | None = None
    output_tokens: Annotated[int, Field(ge=0)] | None = None
    at: datetime | None = Field(None, description="When the assessment was made.")
    severity: Severity | None = Field(
        None,
        description="The Incident's severity it assessed (its most severe alert): a more "
        "severe alert joining before the action starts is assessed again.",
    )
    evidence: Evidence | None = Field(None, description="What was looked at first.")


class Approval(Model):
    """Whether a human allowed the action, and which action on which target.

    The action and target are written when approval is requested; an
    approval is acted on only if they are still what would be done.
    """

    required: bool = Field(description="Whether the policy requires approval for the action.")
    state: ApprovalState = Field(
        "Pending", description="Pending, Approved, Rejected, Expired, or Cancelled (recovered)."
    )
    action: ActionName | None = Field(None, description="The action asked for.")
    parameters: Parameters = Field(default_factory=dict, description="Its parameters.")
    target: ShortText | None = Field(None, description="Its target: region/cluster/service.")
    by: ShortText | None = Field(None, description="Who decided (Slack user id, kubectl user).")
    at: datetime | None = Field(None, description="When they decided.")
    via: Literal["slack", "kubectl", "timeout", "policy"] | None = Field(
        None, description="Where the decision came from."
    )
    deadline: datetime | None = Field(None, description="When a pending approval expires.")
    # Copied from the policy when approval is requested, so whoever records a
    # decision (the webhook, on a Slack click) needs no access to policies.
    approvers: list[ShortText] = Field(
        default_factory=list, max_length=256, description="Slack user ids; empty: anyone."
    )
    approver_group: ShortText | None = Field(None, description="A Slack user group id.")


class Acknowledgement(Model):
    """A person took the Incident: "I am on it". MTTA is measured to it."""

    by: ShortText = Field(description="Who (Slack user id, kubectl user, PagerDuty user).")
    at: datetime = Field(description="When.")
    via: Literal["slack", "kubectl", "approval", "pagerduty"] = Field(
        description="Where from; approval: a person's approval or rejection implies it."
    )


class Remediation(Model):
    """The action taken on the service."""

    action: ActionName
    parameters: Parameters = Field(default_factory=dict, description="Its parameters.")
    target: ShortText = Field(description="region/cluster/service acted on.")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Literal["Pending", "InProgress", "Succeeded", "Failed", "TimedOut", "Refused"] = (
        "Pending"
    )
    receipt: ShortText | None = Field(
        None, description="What acting produced, to follow it: e.g. the ECS deployment id."
    )
    message: Text | None = None

    @model_validator(mode="after")
    def parameters_fit(self) -> Remediation:
        self.parameters = _parameters_fit(self.action, self.parameters)
        return self


class SlackRef(Model):
    channel: ShortText
    ts: ShortText


class JiraRef(Model):
    key: ShortText
    url: Annotated[str, Field(max_length=2048)] | None = None


class EmailRef(Model):
    message_id: ShortText


class PagerDutyRef(Model):
    """The PagerDuty alert of this Incident (Events API v2): there once a trigger is decided."""

    dedup_key: Annotated[str, Field(max_length=255)]
    routing_key: ShortText | None = Field(
        None, description="The name (never the value) of the routing key paged."
    )
    triggered: bool | None = Field(
        None, description="PagerDuty took the trigger; false while it waits in the lane."
    )
    acknowledged: bool | None = Field(None, description="The acknowledge event was sent.")
    resolved: bool | None = Field(None, description="The resolve event was sent.")


class Notifications(Model):
    """Where the incident was announced, so it is never announced twice."""

    slack: SlackRef | None = None
    jira: JiraRef | None = None
    email: EmailRef | None = None
    pagerduty: PagerDutyRef | None = None
    jira_commented: bool | None = Field(None, description="The resolution comment was added.")


class SilenceRef(Model):
    """The Silence that muted an Incident (see silence.py), and until when."""

    name: ShortText = Field(description="The Silence's name, in the Incident's namespace.")
    until: datetime = Field(description="When its window ends: the Incident is looked at again.")


class Condition(Model):
    """A Kubernetes-style condition (metav1.Condition)."""

    type: ConditionType
    status: ConditionStatus
    reason: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: datetime
    observed_generation: Annotated[int, Field(ge=0)] | None = None


class Record(Model):
    """One thing that happened in a transition: a timeline entry and an Event."""

    kind: Annotated[str, Field(max_length=64)] = Field(description="e.g. assessment, resolved")
    reason: Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z][A-Za-z0-9]*$")]
    message: Annotated[str, Field(max_length=1024)]
    warning: bool = False


class LastTransition(Model):
    """The latest transition and what it recorded.

    Written in the same patch as the transition itself, so a crash right after
    it cannot lose the records: on restart the operator publishes them again
    (timeline and Event writes are idempotent).
    """

    at: datetime
    phase: Phase
    records: list[Record] = Field(default_factory=list, max_length=8)


class AlertEntry(Model):
    """One alert of an Incident: the first is the alarm in its spec; a grouping
    policy (`ResponsePolicy.spec.grouping`) adds the alarms alike in its
    attributes, the way a PagerDuty incident holds alerts."""

    fingerprint: Annotated[str, Field(min_length=1, max_length=1024)]
    title: ShortText
    severity: Severity
    service: Identifier | None = Field(None, description="The service the alert names.")
    state: AlarmState = Field(description="Its latest state.")
    occurrences: Annotated[int, Field(ge=1)] = Field(1, description="How often it fired.")
    first_seen: datetime
    last_seen: datetime


Email = Annotated[str, Field(max_length=320)]


class EscalationTargets(Model):
    """Whom one escalation step tells; at least one."""

    slack_user_group: ShortText | None = Field(
        None, description="A Slack user group id (S0...) mentioned in the Incident's thread."
    )
    email: list[Email] = Field(
        default_factory=list, max_length=32, description="Addresses sent an email (SES)."
    )
    pagerduty: ShortText | None = Field(
        None,
        description="A routing key's name (PAGERDUTY_ROUTING_KEYS; 'default' is "
        "PAGERDUTY_ROUTING_KEY) that is paged, a new PagerDuty alert resolved with the Incident.",
    )

    @model_validator(mode="after")
    def someone(self) -> EscalationTargets:
        if not (self.slack_user_group or self.email or self.pagerduty):
            raise ValueError("a step tells someone: slackUserGroup, email or pagerduty")
        return self


class EscalationStepTaken(EscalationTargets):
    """One step of the policy's escalation, taken: when, and whom it told."""

    number: Annotated[int, Field(ge=1, le=MAX_ESCALATION_STEPS)] = Field(
        description="1 for the first step taken, counting on through repeats."
    )
    step: Annotated[int, Field(ge=1, le=10)] = Field(description="Which of the policy's steps.")
    at: datetime


class EscalationState(Model):
    """An escalated Incident's escalation chain: since when, and the steps taken."""

    since: datetime = Field(description="When the Incident was escalated.")
    steps: list[EscalationStepTaken] = Field(default_factory=list, max_length=MAX_ESCALATION_STEPS)


class IncidentStatus(Model):
    """What happened. Written by the operator, the webhook (counts) and approvals."""

    phase: Phase | None = Field(None, description="One-word summary of where the incident is.")
    occurrences: Annotated[int, Field(ge=0)] = Field(0, description="How often the alarm fired.")
    first_seen: datetime | None = None
    last_seen: datetime | None = Field(
        None, description="When a delivery last said the alarm fires (repeats included)."
    )
    truncated_alerts: Annotated[int, Field(ge=0)] | None = Field(
        None,
        description="Alerts of this Incident's Alertmanager group that its latest "
        "notification left out (max_alerts): the group is bigger than what arrived.",
    )
    alarm_state: AlarmState | None = Field(
        None,
        description="Latest alarm state; OK resolves. With several alerts: OK once all of "
        "them are (or any, with the grouping's resolveWhen: any).",
    )
    alerts: list[AlertEntry] = Field(
        default_factory=list,
        max_length=MAX_ALERTS,
        description=f"The Incident's alerts, the first {MAX_ALERTS}; empty on an Incident "
        "nobody counted yet (its one alert is the spec's alarm).",
    )
    alert_count: Annotated[int, Field(ge=1)] | None = Field(
        None, description="How many alerts the Incident holds, those beyond the list included."
    )
    message: Text | None = Field(None, description="Latest human-readable detail.")
    assessment: Assessment | None = None
    approval: Approval | None = None
    acknowledgement: Acknowledgement | None = None
    silence: SilenceRef | None = Field(
        None, description="The Silence that muted it (phase Silenced), the latest one."
    )
    escalation: EscalationState | None = Field(
        None, description="Since when it is escalated, and the policy's escalation steps taken."
    )
    remediation: Remediation | None = None
    notifications: Notifications | None = None
    conditions: list[Condition] = Field(default_factory=list, max_length=16)
    last_transition: LastTransition | None = None
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    delivery_ids: list[ShortText] = Field(
        default_factory=list,
        max_length=64,
        description="Recent source message ids, so a redelivery is not counted twice.",
    )


# --- ResponsePolicy: how incidents for some services are handled ------------


class PolicyMatch(Model):
    """Which incidents a policy applies to. Every given criterion must hold."""

    services: list[ShortText] = Field(
        default_factory=list, max_length=64, description="Service name globs; empty: any."
    )
    severities: list[Severity] = Field(
        default_factory=list, max_length=5, description="Severities; empty: any."
    )
    labels: dict[str, ShortText] = Field(
        default_factory=dict, max_length=32, description="Labels that must all be present."
    )


class AssessorConfig(Model):
    type: Literal["rules", "gemini"] = Field(
        "rules",
        description="rules (the default), or gemini; gemini without GEMINI_API_KEY "
        "falls back to the rules.",
    )
    model: ShortText | None = Field(None, description="Gemini model; GEMINI_MODEL if unset.")
    prompt: Annotated[str, Field(max_length=MAX_TEXT)] | None = Field(
        None, description="Extra instructions appended to the prompt for these services."
    )


class Recurrences(Model):
    """Earlier Incidents of the same service and alarm (this one not counted)."""

    at_least: Annotated[int, Field(ge=1, le=1000)] = Field(description="How many, at least.")
    within: Duration = Field(description="Counted over this time before the assessment.")


class RuleWhen(Model):
    """What the evidence must show for the rule to match; every condition given must hold.
    A condition whose evidence is missing (its collector failed) does not hold."""

    deployed_within: Duration | None = Field(
        None, description="The service's latest deployment started within this time."
    )
    recurrences: Recurrences | None = None

    @property
    def empty(self) -> bool:
        return self.deployed_within is None and self.recurrences is None


class Rule(Model):
    """Rules assessor: the first rule that matches decides."""

    severities: list[Severity] = Field(default_factory=list, max_length=5)
    alarm_names: list[ShortText] = Field(
        default_factory=list, max_length=32, description="Alarm name globs; empty: any."
    )
    when: RuleWhen | None = Field(None, description="Conditions on the gathered evidence.")
    action: ActionName
    parameters: Parameters = Field(default_factory=dict, description="The action's parameters.")
    decision: Verdict = "SAFE"

    @model_validator(mode="after")
    def parameters_fit(self) -> Rule:
        self.parameters = _parameters_fit(self.action, self.parameters)
        return self


def _remediations() -> list[str]:
    from .remediate import registry

    return list(registry.plugins())


def _allowed_by_default() -> list[str]:
    from .remediate import registry

    return list(registry.allowed_by_default())


class ApprovalPolicy(Model):
    required_for: list[ActionName] = Field(
        default_factory=_remediations,
        max_length=32,
        description="Actions that wait for a human; every remediation if unset.",
    )
    approvers: list[ShortText] = Field(
        default_factory=list,
        max_length=256,
        description="Slack user ids allowed to approve; empty: anyone.",
    )
    approver_group: ShortText | None = Field(None, description="A Slack user group id.")
    timeout_seconds: Annotated[int, Field(ge=30, le=7 * 24 * 3600)] = 1800
    on_timeout: Literal["escalate", "approve", "ignore"] = "escalate"


class RemediationPolicy(Model):
    cooldown_seconds: Annotated[int, Field(ge=0, le=7 * 24 * 3600)] = 900
    max_per_hour: Annotated[int, Field(ge=0, le=100)] = 3
    rollout_timeout_seconds: Annotated[int, Field(ge=10, le=6 * 3600)] = 600


class RetentionPolicy(Model):
    """How long a finished Incident stays in the cluster (its timeline stays in DynamoDB)."""

    seconds: Annotated[int, Field(ge=0, le=MAX_RETENTION_SECONDS)] = Field(
        DEFAULT_RETENTION_SECONDS,
        description="Seconds a finished Incident (Resolved, Ignored, Failed) stays after its "
        "last transition or alarm, then the operator deletes it; 0 keeps it forever.",
    )


class SlackTarget(Model):
    channel: ShortText


class JiraTarget(Model):
    project: ShortText | None = Field(None, description="Project key; JIRA_PROJECT if unset.")
    issue_type: ShortText = "Task"
    on_notify_team: bool = Field(False, description="Also open an issue for notify_team.")


class EmailTarget(Model):
    recipients: list[Annotated[str, Field(max_length=320)]] = Field(
        default_factory=list, max_length=32
    )


class Grouping(Model):
    """Alarms alike in `by` become one Incident: the first opens it, and those
    arriving within `window` of its creation join it as more alerts."""

    by: list[Annotated[str, Field(max_length=MAX_NAME, pattern=r"^[A-Za-z0-9_./-]+$")]] = Field(
        min_length=1,
        max_length=8,
        description="Alarm attributes: service, cluster, source, severity, alarm (its name), "
        "or any label or dimension name.",
    )
    window: Duration = Field("5m", description="How long after the first alarm others join it.")
    resolve_when: Literal["all", "any"] = Field(
        "all", description="The Incident's alarm is OK once all its alerts are, or any."
    )


class EvidencePolicy(Model):
    """Read-only evidence gathered before each assessment (see evidence/collectors/)."""

    enabled: bool = Field(True, description="Gather evidence before assessing.")
    budget_seconds: Annotated[int, Field(ge=1, le=60)] = Field(
        10,
        description="All collectors together, at most; one that is not done by then is "
        "recorded as timed out and the assessment goes on without it.",
    )
    model_calls: Annotated[int, Field(ge=0, le=3)] = Field(
        0,
        description="Collector calls Gemini may make itself (function calling), within the "
        "same budget; each may change only how a collector looks (a window, a query), "
        "never where. 0: none.",
    )
    collectors: Annotated[dict[str, dict[str, JsonValue]], _FromRegistry("collectors")] = Field(
        default_factory=dict,
        description="Per-collector settings, e.g. logs: {logGroup: /ecs/checkout}.",
    )

    @model_validator(mode="after")
    def settings_fit(self) -> EvidencePolicy:
        from .evidence import registry

        self.collectors = registry.check_settings(self.collectors)
        return self


def _escalated() -> list[Phase]:
    return ["Escalated"]


class PagerDutyTarget(Model):
    routing_key: ShortText | None = Field(
        None,
        description="The name of a routing key in PAGERDUTY_ROUTING_KEYS (the key itself "
        "stays in a Secret); PAGERDUTY_ROUTING_KEY if unset.",
    )
    trigger_on: list[Phase] = Field(
        default_factory=_escalated,
        max_length=8,
        description="Phases that page (trigger); Escalated if unset.",
    )
    on_notify_team: bool = Field(False, description="Also page for a plain notify_team.")


class EscalationStep(EscalationTargets):
    after: Duration = Field(
        description="How long after the escalation (for the first step) or the step before "
        "it this one is taken, if nobody acknowledged the Incident meanwhile."
    )


class EscalationPolicy(Model):
    """Who is told, and when, while an escalated Incident stays unacknowledged."""

    steps: list[EscalationStep] = Field(min_length=1, max_length=10)
    repeat: Annotated[int, Field(ge=0, le=10)] = Field(
        0, description="How many times the chain starts over after its last step."
    )


class NotifyPolicy(Model):
    slack: SlackTarget | None = None
    jira: JiraTarget | None = None
    email: EmailTarget | None = None
    pagerduty: PagerDutyTarget | None = None


# The same two checks as `ResponsePolicySpec.rules_can_apply`, in CEL, so the
# API server refuses such a policy from any writer (`kubectl apply` says why).
_CATCH_ALL = "(!has({r}.severities) || size({r}.severities) == 0) && " + (
    "(!has({r}.alarmNames) || size({r}.alarmNames) == 0) && "
    "(!has({r}.when) || (!has({r}.when.deployedWithin) && !has({r}.when.recurrences)))"
)
_POLICY_VALIDATIONS: list[JsonValue] = [
    {
        "rule": "!has(self.rules) || size(self.rules.filter(r, "
        + _CATCH_ALL.format(r="r")
        + ")) == 0 || (size(self.rules.filter(r, "
        + _CATCH_ALL.format(r="r")
        + ")) == 1 && "
        + _CATCH_ALL.format(r="self.rules[size(self.rules) - 1]")
        + ")",
        "message": "a rule with no severities, alarmNames or when matches everything, so it "
        "must be the last rule: the rules after it could never apply",
    },
]


def _policy_schema(schema: dict[str, JsonValue]) -> None:
    from .remediate import registry

    default = repr(list(registry.allowed_by_default())).replace('"', "'")
    allowed: JsonValue = {
        "rule": "!has(self.rules) || self.rules.all(r, r.action in "
        f"(has(self.allowedActions) ? self.allowedActions : {default}))",
        "message": "every rule's action must be in allowedActions: a rule whose action is "
        "not allowed can never apply",
    }
    schema["x-kubernetes-validations"] = [allowed, *_POLICY_VALIDATIONS]


class ResponsePolicySpec(Model):
    model_config = ConfigDict(json_schema_extra=_policy_schema)

    match: PolicyMatch = Field(default_factory=PolicyMatch)
    assessor: AssessorConfig = Field(default_factory=AssessorConfig)
    rules: list[Rule] = Field(default_factory=list, max_length=64)
    allowed_actions: list[ActionName] = Field(
        default_factory=_allowed_by_default,
        max_length=32,
        description="Actions this policy permits; anything else escalates. If unset: "
        "notify_team, ignore and the actions that are allowed by default (restart_service).",
    )
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    remediation: RemediationPolicy = Field(default_factory=RemediationPolicy)
    actions: Annotated[dict[str, dict[str, JsonValue]], _FromRegistry("settings")] = Field(
        default_factory=dict,
        description="Per-action settings and bounds, e.g. "
        "scale_service: {minCount: 2, maxCount: 10}.",
    )
    notify: NotifyPolicy = Field(default_factory=NotifyPolicy)
    grouping: Grouping | None = Field(
        None, description="Group alarms into one Incident; unset: one Incident per alarm."
    )
    escalation: EscalationPolicy | None = Field(
        None,
        description="Steps taken while an escalated Incident stays unacknowledged; an "
        "acknowledgement or the resolution stops them.",
    )
    retention: RetentionPolicy = Field(default_factory=RetentionPolicy)
    evidence: EvidencePolicy = Field(default_factory=EvidencePolicy)

    @model_validator(mode="after")
    def settings_fit(self) -> ResponsePolicySpec:
        from .remediate import registry

        self.actions = registry.check_settings(self.actions)
        return self

    @model_validator(mode="after")
    def rules_can_apply(self) -> ResponsePolicySpec:
        """Refuse rules that can never apply: a silent no-op rule is a policy bug."""
        for index, rule in enumerate(self.rules):
            if rule.action not in self.allowed_actions:
                raise ValueError(
                    f"rules[{index}]: action {rule.action} is not in allowedActions "
                    f"{self.allowed_actions}, so this rule can never apply"
                )
            conditional = rule.when is not None and not rule.when.empty
            catch_all = not rule.severities and not rule.alarm_names and not conditional
            if catch_all and index < len(self.rules) - 1:
                raise ValueError(
                    f"rules[{index}] matches everything (no severities, alarmNames or when), "
                    f"so rules[{index + 1}:] can never apply: make it the last rule"
                )
        return self


# --- The custom resources ---------------------------------------------------


class Incident(Model):
    """One incident: an alarm and everything done about it."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["incident-response.dev/v1alpha1"] = "incident-response.dev/v1alpha1"
    kind: Literal["Incident"] = "Incident"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: IncidentSpec
    status: IncidentStatus = Field(default_factory=IncidentStatus)

    @property
    def reference(self) -> str:
        """namespace/name: how people, Slack buttons and the timeline name it."""
        return f"{self.metadata.get('namespace', '')}/{self.metadata.get('name', '')}"

    @property
    def severity(self) -> Severity:
        """The most severe of its alerts' severities (the spec's, for one alert)."""
        severities = [self.spec.severity, *(alert.severity for alert in self.status.alerts)]
        return max(severities, key=SEVERITY_RANK.__getitem__)

    @property
    def identity(self) -> str:
        """namespace/name@uid: this Incident for good, as its claims know it.

        A name comes back: once retention deletes an Incident, the next alarm
        of the same fingerprint gets its name again. A claim keyed by the name
        alone would be taken by the newcomer for its own (a restart it never
        made); the uid tells them apart.
        """
        return f"{self.reference}@{self.metadata.get('uid', '')}"


class ResponsePolicy(Model):
    """How incidents for matching services are assessed, acted on and announced."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["incident-response.dev/v1alpha1"] = "incident-response.dev/v1alpha1"
    kind: Literal["ResponsePolicy"] = "ResponsePolicy"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ResponsePolicySpec = Field(default_factory=ResponsePolicySpec)

"""The operator's Prometheus metrics: every definition is here, fed from the few
places that know the facts.

- Transitions, the time from alarm to assessment, approval, remediation and
  resolution, assessments and remediation attempts and outcomes: from the one
  place a transition is written (`transition_written`, called by the
  reconciler after its status write), so each is counted once, by the
  process that made it, however the reconciler is cut into modules.
- Incidents by phase, service and severity, alarm occurrences, the oldest
  Incident of each phase: from the watch (`Census`), computed at scrape time.
- AI calls: from the Gemini assessor (`ai_call`). AWS calls: from hooks on
  every boto3 client the operator makes (`aws_calls.timed`). Notifications:
  from the fan-out (`NOTIFICATIONS`). Breaker states and the reconcile
  queue: read at scrape time from the notifier and the reconciler
  (`watch_*`).
- Whether this replica leads: from the leader election (`LEADER`).

A standby watches nothing, so it exports `incident_operator_leader 0` and
little else; aggregate the Incident gauges with `max`, not `sum`, across
replicas: a leader that just handed over keeps its last values until it exits.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .models import Incident, ServiceRef
from .remediate.target import service_name

REGISTRY = CollectorRegistry()

# From seconds (an automatic restart) to a day (a human who slept on it).
_ALARM_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)

TRANSITIONS = Counter(
    "incident_operator_transitions_total",
    "Phase transitions written, by service, the phase left and the phase entered "
    "(from Triggered: a new Incident).",
    ["service", "from_phase", "to_phase"],
    registry=REGISTRY,
)
Stage = Literal["assessment", "acknowledgement", "approval", "remediation", "resolution"]
_STAGES: list[tuple[Stage, str]] = [
    ("assessment", "assessment"),
    ("acknowledgement", "acknowledgement (a person took it; an approval implies it): MTTA"),
    ("approval", "approval or rejection (by a person, the policy or a timeout)"),
    ("remediation", "remediation start (the ECS call made)"),
    ("resolution", "resolution: MTTR"),
]
ALARM_TO: dict[Stage, Histogram] = {
    stage: Histogram(
        f"incident_operator_alarm_to_{stage}_seconds",
        f"Seconds from an alarm's first arrival (status.firstSeen) to its Incident's {what}, "
        "by service and severity.",
        ["service", "severity"],
        buckets=_ALARM_BUCKETS,
        registry=REGISTRY,
    )
    for stage, what in _STAGES
}
ASSESSMENTS = Counter(
    "incident_operator_assessments_total",
    "Assessments written, by assessor (rules, gemini) and decision (SAFE, ESCALATE).",
    ["assessor", "decision"],
    registry=REGISTRY,
)
AI_SECONDS = Histogram(
    "incident_operator_ai_request_seconds",
    "Time of one AI assessment call (the SDK's retries included), by model.",
    ["model"],
    buckets=(0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
    registry=REGISTRY,
)
AI_TOKENS = Counter(
    "incident_operator_ai_tokens_total",
    "Tokens billed for AI assessments, by model and kind (prompt, output; thoughts count "
    "as output).",
    ["model", "kind"],
    registry=REGISTRY,
)
AI_FAILURES = Counter(
    "incident_operator_ai_failures_total",
    "AI assessments that failed and escalated, by model and reason (timeout, rate_limited, "
    "server_error, client_error, connection, unparseable, other).",
    ["model", "reason"],
    registry=REGISTRY,
)
REMEDIATION_ATTEMPTS = Counter(
    "incident_operator_remediation_attempts_total",
    "Remediations attempted (the action was called), by action.",
    ["action"],
    registry=REGISTRY,
)
REMEDIATION_OUTCOMES = Counter(
    "incident_operator_remediation_outcomes_total",
    "Remediations ended, by action and outcome (Succeeded, Failed, TimedOut, Refused, Unknown).",
    ["action", "outcome"],
    registry=REGISTRY,
)
NOTIFICATIONS = Counter(
    "incident_operator_notifications_total",
    "Channels asked to tell of a transition, by channel and outcome (told, failed, "
    "open: skipped while its breaker is open, and queued: waiting in a paced lane).",
    ["channel", "outcome"],
    registry=REGISTRY,
)
PASS_SECONDS = Histogram(
    "incident_operator_reconcile_pass_seconds",
    "Time of one reconcile pass of one Incident (AI, AWS and channel calls included).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "incident_operator_reconcile_queue_depth",
    "Incidents waiting for a reconcile pass or in one now.",
    registry=REGISTRY,
)
LEADER = Gauge(
    "incident_operator_leader",
    "1 while this replica holds the Lease and acts, else 0.",
    registry=REGISTRY,
)
ALARMS_SILENCED = Counter(
    "incident_operator_alarms_silenced_total",
    "Alarms muted by a Silence (an Incident entering phase Silenced), by service and severity.",
    ["service", "severity"],
    registry=REGISTRY,
)
AWS_CALL_SECONDS = Histogram(
    "incident_operator_aws_call_seconds",
    "Time the operator waited on one AWS API call, boto3's retries and their backoff "
    "included, by service (dynamodb, ecs, cloudwatch, logs, ses) and operation.",
    ["service", "operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RETENTION_DELETED = Counter(
    "incident_operator_retention_deleted_total",
    "Finished Incidents deleted at the end of their retention period.",
    registry=REGISTRY,
)


# --- from a written transition ------------------------------------------------

_DECIDED = ("Approved", "Rejected")
_REMEDIATION_ENDS = ("Succeeded", "Failed", "TimedOut", "Refused")


def transition_written(before: Incident, after: Incident) -> None:
    """Count one transition the reconciler wrote: `before` as the decision saw
    it, `after` as the API server stored it."""
    old, new = before.status, after.status
    old_phase, new_phase = old.phase or "Triggered", new.phase or "Triggered"
    labels = (_service(after.spec.service), after.spec.severity)
    TRANSITIONS.labels(labels[0], old_phase, new_phase).inc()
    last = new.last_transition
    records = last.records if last else []
    kinds = {record.kind for record in records}
    alarm = new.first_seen or _timestamp(after.metadata.get("creationTimestamp"))

    def since_alarm(stage: Stage, at: datetime | None = None) -> None:
        moment = at or (last.at if last is not None else None)
        if alarm is not None and moment is not None:
            seconds = max((moment - alarm).total_seconds(), 0.0)
            ALARM_TO[stage].labels(*labels).observe(seconds)

    if new_phase == "Silenced" and old_phase != "Silenced":
        ALARMS_SILENCED.labels(*labels).inc()
    if "acknowledged" in kinds and new.acknowledgement is not None:
        since_alarm("acknowledgement", new.acknowledgement.at)  # when the person said so
    if "assessment" in kinds and new.assessment is not None:
        ASSESSMENTS.labels(new.assessment.assessor, new.assessment.decision).inc()
        since_alarm("assessment")
    # A person's decision arrives in status before the pass that records it
    # (so `old` already says Approved): the record tells. The policy's own
    # approval is written with the assessment, with no record of its own.
    decided = any(r.kind == "approval" and r.reason in _DECIDED for r in records)
    if decided or (old.approval is None and new.approval and new.approval.state in _DECIDED):
        since_alarm("approval")
    if "action_started" in kinds:
        since_alarm("remediation")
    if old_phase == "Remediating" and old.remediation is not None:
        action = old.remediation.action
        result = new.remediation.result if new.remediation else "Pending"
        # The action was called: it started, was refused or failed, or its
        # outcome could not be known (escalated, result still Pending).
        if old.remediation.result == "Pending" and (result != "Pending" or new_phase != old_phase):
            REMEDIATION_ATTEMPTS.labels(action).inc()
        if new_phase != "Remediating":
            outcome = result if result in _REMEDIATION_ENDS else "Unknown"
            REMEDIATION_OUTCOMES.labels(action, outcome).inc()
    if new_phase == "Resolved" and old_phase != "Resolved":
        since_alarm("resolution")


def ai_call(
    *,
    model: str,
    seconds: float,
    prompt_tokens: int | None = None,
    output_tokens: int | None = None,
    failure: str | None = None,
) -> None:
    """One AI assessment call, whatever became of it."""
    AI_SECONDS.labels(model).observe(seconds)
    if prompt_tokens:
        AI_TOKENS.labels(model, "prompt").inc(prompt_tokens)
    if output_tokens:
        AI_TOKENS.labels(model, "output").inc(output_tokens)
    if failure is not None:
        AI_FAILURES.labels(model, failure).inc()


# --- from the watch -------------------------------------------------------------


@dataclass(frozen=True)
class _Seen:
    phase: str
    service: str
    severity: str
    alarm: str
    occurrences: int
    since: float  # epoch seconds: when it entered its phase


class Census(Collector):
    """What the watch says about every Incident, summed at scrape time.

    A few short strings per Incident: cheap even with thousands. Only the
    leader runs the watch, so only the leader's census is filled.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[str, _Seen] = {}
        self._clock = clock

    def observe(self, body: Mapping[str, Any]) -> None:
        metadata, spec = body["metadata"], body.get("spec") or {}
        status = body.get("status") or {}
        last = status.get("lastTransition") or {}
        since = _timestamp(last.get("at")) or _timestamp(metadata.get("creationTimestamp"))
        self._seen[metadata["uid"]] = _Seen(
            phase=status.get("phase") or "Triggered",
            service=_service_of(spec.get("service") or {}),
            severity=str(spec.get("severity") or "medium"),
            alarm=str((spec.get("alarm") or {}).get("name") or ""),
            occurrences=int(status.get("occurrences") or 1),
            since=since.timestamp() if since else self._clock(),
        )

    def forget(self, uid: str) -> None:
        self._seen.pop(uid, None)

    def collect(self) -> Iterator[Metric]:
        seen = list(self._seen.values())
        incidents = GaugeMetricFamily(
            "incident_operator_incidents",
            "Incidents in the cluster, by phase, service and severity.",
            labels=["phase", "service", "severity"],
        )
        for (phase, service, severity), count in Tally(
            (s.phase, s.service, s.severity) for s in seen
        ).items():
            incidents.add_metric([phase, service, severity], count)
        occurrences = GaugeMetricFamily(
            "incident_operator_alarm_occurrences",
            "How often each alarm fired, summed over its Incidents in the cluster: the noisy ones.",
            labels=["service", "alarm"],
        )
        fired: Tally[tuple[str, str]] = Tally()
        for s in seen:
            fired[(s.service, s.alarm)] += s.occurrences
        for (service, alarm), count in fired.items():
            occurrences.add_metric([service, alarm], count)
        oldest = GaugeMetricFamily(
            "incident_operator_phase_age_max_seconds",
            "Seconds the longest-waiting Incident of each phase has been in it: an open phase "
            "(Triggered, Assessing, AwaitingApproval, Remediating) that grows is a stuck one.",
            labels=["phase"],
        )
        entered: dict[str, float] = {}
        for s in seen:
            entered[s.phase] = min(entered.get(s.phase, s.since), s.since)
        now = self._clock()
        for phase, since in entered.items():
            oldest.add_metric([phase], max(now - since, 0.0))
        yield from (incidents, occurrences, oldest)


# --- read at scrape time --------------------------------------------------------


class Breaker(Protocol):
    @property
    def state(self) -> str: ...


BREAKER_STATES = ("closed", "open", "half_open")


class _Breakers(Collector):
    def __init__(self) -> None:
        self.breakers: Mapping[str, Breaker] = {}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "incident_operator_notify_breaker_state",
            "Each notification channel's circuit breaker: 1 for its current state (closed; "
            "open: the channel is skipped; half_open: the next call is a trial), 0 for the others.",
            labels=["channel", "state"],
        )
        for channel, breaker in self.breakers.items():
            current = breaker.state
            for state in BREAKER_STATES:
                family.add_metric([channel, state], 1.0 if state == current else 0.0)
        yield family


class _Current(Collector):
    """Delegates to the census of the running operator; an empty one until then."""

    def __init__(self) -> None:
        self.census = Census()

    def collect(self) -> Iterator[Metric]:
        return self.census.collect()


_BREAKERS = _Breakers()
_CENSUS = _Current()
REGISTRY.register(_BREAKERS)
REGISTRY.register(_CENSUS)


def watch_breakers(breakers: Mapping[str, Breaker]) -> None:
    _BREAKERS.breakers = breakers


def watch_queue(depth: Callable[[], int]) -> None:
    QUEUE_DEPTH.set_function(depth)


def watch_census(census: Census) -> None:
    _CENSUS.census = census


def families() -> dict[str, str]:
    """Every metric family this module defines: name (as exposed, without a
    counter's _total) -> type (counter, gauge, histogram)."""
    return {family.name: family.type for family in REGISTRY.collect()}


# --- helpers ----------------------------------------------------------------------


def _service(ref: ServiceRef) -> str:
    return service_name(ref)


def _service_of(raw: Mapping[str, Any]) -> str:
    try:
        return service_name(ServiceRef.model_validate(raw))
    except ValueError:
        return str(raw.get("name") or "unknown")


def _timestamp(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None

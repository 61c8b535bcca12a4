"""Build the operator's parts from the settings: one place to see what is used."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes import client

from .. import metrics
from ..assess import Assessor
from ..assess.factory import assess, build_assessor
from ..config import Settings
from ..evidence.collector import Context as EvidenceContext
from ..evidence.gather import gather
from ..kube import api_client
from ..models import Assessment, Incident
from ..notify.factory import build_notifier
from ..notify.fanout import FanOutNotifier
from ..policy import Policy
from ..remediate.executor import build_executor
from ..timeline import Timeline
from ..timeline.dynamodb import DynamoTimeline, LogTimeline
from .phases import Ports
from .reconciler import Policies, Reconciler
from .retention import Retention
from .silences import Silences


def build_timeline(settings: Settings) -> Timeline:
    if settings.timeline_table:
        return DynamoTimeline(
            settings.timeline_table, ttl_days=settings.timeline_ttl_days, region=settings.aws_region
        )
    return LogTimeline()


def build_ports(settings: Settings, *, api: client.ApiClient | None = None) -> Ports:
    key = settings.gemini_api_key.get_secret_value() if settings.gemini_api_key else None
    # One assessor per (type, model), built on first use.
    assessors: dict[tuple[str, str | None], Assessor] = {}
    looks = EvidenceContext(
        kube=api, default_cluster=settings.ecs_cluster_name, default_region=settings.aws_region
    )

    async def assess_incident(incident: Incident, policy: Policy) -> Assessment:
        model = policy.spec.assessor.model or settings.gemini_model
        cache_key = (policy.spec.assessor.type, model)
        assessor = assessors.get(cache_key)
        if assessor is None:
            assessor = assessors[cache_key] = build_assessor(
                policy=policy,
                gemini_api_key=key,
                gemini_model=model,
                gemini_base_url=settings.gemini_base_url,
                gemini_timeout_s=settings.gemini_timeout_seconds,
            )
        # A group is as severe as its most severe alert, and says so.
        severity = incident.severity
        spec = incident.spec.model_copy(update={"severity": severity})
        # Looked at once per assessment, within the policy's budget; never raises.
        evidence = policy.spec.evidence
        seen = await gather(incident, policy=evidence, context=looks) if evidence.enabled else None
        assessment = await assess(
            incident=spec,
            policy=policy,
            assessor=assessor,
            alerts=incident.status.alerts,
            evidence=seen,
        )
        return assessment.model_copy(update={"severity": severity})

    return Ports(
        assess=assess_incident,
        remediator=build_executor(
            table=settings.timeline_table, region=settings.aws_region, kube=api
        ),
        default_cluster=settings.ecs_cluster_name,
        default_region=settings.aws_region,
    )


@dataclass(frozen=True)
class Parts:
    """What a leading operator runs: everything that acts, and what it watches."""

    api: client.ApiClient
    policies: Policies
    reconciler: Reconciler
    retention: Retention
    census: metrics.Census
    silences: Silences


def build_parts(settings: Settings) -> Parts:
    api = api_client()
    policies = Policies()
    notifier = build_notifier(settings)
    silences = Silences(api=api)
    reconciler = Reconciler(
        api=api,
        ports=build_ports(settings, api=api),
        timeline=build_timeline(settings),
        policies=policies,
        notifier=notifier,
        # A channel that failed is told again once its breaker would let it.
        retell_after=settings.notify_breaker_cooloff_seconds,
        silences=silences,
    )
    census = metrics.Census()
    metrics.watch_census(census)
    metrics.watch_queue(lambda: reconciler.depth)
    if isinstance(notifier, FanOutNotifier):
        metrics.watch_breakers(notifier.breakers)
    retention = Retention(api=api, policies=policies)
    return Parts(api, policies, reconciler, retention, census, silences)

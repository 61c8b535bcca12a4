"""`history`: earlier Incidents of the same service and alarm, and how they ended.

Read from the API server: the Incidents of the same namespace with the
same service label (the webhook sets it), the same alarm name, created in
the window before this one. Finished Incidents stay there for the policy's
retention (a week by default), so a window longer than that sees fewer.
What each one's assessment decided and how its action ended is what a
person would ask first: "we restarted it twice this week, did it help?"
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from kubernetes import client
from pydantic import Field, ValidationError

from ...ingest.names import label_value
from ...models import GROUP, VERSION, Duration, Incident, seconds
from ...remediate.target import service_name
from .. import Found, Skip, line
from ..collector import Collector, CollectorSettings, Request, blocking

MAX_SHOWN = 10
MAX_LISTED = 500


class HistorySettings(CollectorSettings):
    """How far back to look."""

    window: Duration = Field("168h", description="How far back (168h: a week).")


def _outcome(incident: Incident) -> str:
    status = incident.status
    assessment = status.assessment
    said = f"{assessment.decision} {assessment.action}" if assessment else "not assessed"
    remediation = status.remediation
    if remediation is not None:
        said += f", {remediation.action} {remediation.result}"
    return f"{said} -> {status.phase or 'Triggered'}"


class History(Collector[HistorySettings]):
    name = "history"
    summary = "earlier Incidents of the same service and alarm, what was done and the outcome"
    rbac = ({"apiGroups": [GROUP], "resources": ["incidents"], "verbs": ["list"]},)
    askable = ("window",)
    Settings = HistorySettings

    async def collect(self, request: Request[HistorySettings]) -> Found:
        kube = self.context.kube
        incident = request.incident
        namespace = incident.metadata.get("namespace")
        if kube is None or not namespace:
            raise Skip("no Kubernetes client")
        service = service_name(incident.spec.service)
        selector = f"{GROUP}/service={label_value(service)}"
        objects = client.CustomObjectsApi(kube)
        listed: dict[str, Any] = await blocking(
            objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            "incidents",
            label_selector=selector,
            limit=MAX_LISTED,
        )
        window = timedelta(seconds=seconds(request.settings.window))
        mine = incident.metadata.get("uid")
        created = _created(incident) or request.now
        earlier: list[Incident] = []
        for body in listed.get("items", []):
            try:
                other = Incident.model_validate(body)
            except ValidationError:
                continue  # written by hand, or by a newer version: not evidence
            when = _created(other)
            if (
                other.metadata.get("uid") == mine
                or when is None
                or not (created - window <= when <= created)
                or service_name(other.spec.service) != service
                or other.spec.alarm.name != incident.spec.alarm.name
            ):
                continue
            earlier.append(other)
        earlier.sort(key=lambda i: _created(i) or created, reverse=True)
        times = tuple(t for t in (_created(i) for i in earlier) if t is not None)
        outcomes = Counter(_outcome(i) for i in earlier)
        shown = [
            {
                "name": i.metadata.get("name"),
                "createdAt": (_created(i) or created).isoformat(timespec="seconds"),
                "phase": i.status.phase,
                "decision": i.status.assessment.decision if i.status.assessment else None,
                "action": i.status.assessment.action if i.status.assessment else None,
                "result": i.status.remediation.result if i.status.remediation else None,
                "occurrences": i.status.occurrences,
            }
            for i in earlier[:MAX_SHOWN]
        ]
        said = request.settings.window
        if not earlier:
            summary = f"history: no earlier Incident of this alarm in {said}"
        else:
            counted = ", ".join(f"{what} ({n})" for what, n in outcomes.most_common(3))
            summary = f"history: {len(earlier)} earlier in {said}: {counted}"
        return Found(
            summary=line(summary),
            data={
                "window": said,
                "count": len(earlier),
                "truncated": len(listed.get("items", [])) >= MAX_LISTED,
                "latest": shown,
            },
            earlier=times,
        )


def _created(incident: Incident) -> datetime | None:
    stamp = incident.metadata.get("creationTimestamp")
    if isinstance(stamp, datetime):
        return stamp
    if isinstance(stamp, str):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return None

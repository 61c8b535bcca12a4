"""An escalated Incident told in a few labelled lines, for a Jira issue or an email."""

from __future__ import annotations

from collections.abc import Callable

from ..models import Incident
from ..text import reveal


def describe(
    incident: Incident,
    *,
    link_template: str | None,
    label: Callable[[str], str] = lambda name: f"{name}:",
    code: Callable[[str], str] = lambda text: text,
) -> str:
    """The escalation, as text; `label` and `code` give the markup (Jira's, or none)."""
    lines = [
        f"Incident {incident.reference} was escalated to a human by incident-operator.",
        "",
        # Alarm text spelled out where it could mislead (a bidi override...).
        *(f"{label(name)} {reveal(value)}" for name, value in facts(incident)),
        "",
        f"See it: {code(kubectl_command(incident))}",
    ]
    link = incident_link(incident, link_template)
    if link:
        lines.append(f"Link: {link}")
    return "\n".join(lines)


def facts(incident: Incident) -> list[tuple[str, str]]:
    """(label, value) pairs an on-call engineer needs first."""
    spec, status = incident.spec, incident.status
    service = spec.service.name + (
        f" (cluster {spec.service.cluster})" if spec.service.cluster else ""
    )
    alarm = spec.alarm.name + (f" - {spec.alarm.reason}" if spec.alarm.reason else "")
    found = [("Service", service), ("Severity", spec.severity), ("Alarm", alarm)]
    if spec.summary:
        found.append(("Summary", spec.summary))
    if status.assessment:
        a = status.assessment
        found.append(
            (
                "Assessment",
                f"{a.decision} {a.action} ({a.assessor}, confidence {a.confidence:.2f}): "
                f"{a.message}",
            )
        )
    if status.message:
        found.append(("Why escalated", status.message))
    if status.truncated_alerts:
        found.append(("Not delivered", truncation(status.truncated_alerts)))
    grouped = alerts_line(incident)
    if grouped:
        found.append(("Alerts", grouped))
    return found


def alerts_line(incident: Incident, *, named: int = 5) -> str | None:
    """A grouped Incident's alerts in a line (None for an Incident of one alert)."""
    status = incident.status
    count = status.alert_count or len(status.alerts)
    if count <= 1:
        return None
    titles = [alert.title for alert in status.alerts[:named]]
    more = f" and {count - len(titles)} more" if count > len(titles) else ""
    firing = sum(alert.state == "ALARM" for alert in status.alerts)
    return f"{count} alerts ({firing} firing): {', '.join(titles)}{more}"


def truncation(count: int) -> str:
    """What a truncated Alertmanager notification means for the reader."""
    return (
        f"{count} more alert(s) of this Alertmanager group were left out of its "
        "notification (max_alerts); the group is bigger than what arrived"
    )


def kubectl_command(incident: Incident) -> str:
    metadata = incident.metadata
    return f"kubectl -n {metadata.get('namespace', '')} get incident {metadata.get('name', '')}"


def incident_link(incident: Incident, template: str | None) -> str | None:
    """INCIDENT_LINK_TEMPLATE filled in, when set."""
    if not template:
        return None
    metadata = incident.metadata
    return template.format(
        namespace=metadata.get("namespace", ""),
        name=metadata.get("name", ""),
        uid=metadata.get("uid", ""),
    )

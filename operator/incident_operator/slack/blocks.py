"""What Slack shows: the Incident's message (Block Kit), thread replies, the timeline.

Pure functions of an Incident, shared by the operator (which posts and
updates the message) and the webhook (which answers button clicks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import evidence
from ..models import Approval, Incident, Record
from ..notify.story import alerts_line, kubectl_command, truncation
from ..text import reveal
from ..timeline import Entry

APPROVE = "incident_approve"
REJECT = "incident_reject"
TIMELINE = "incident_timeline"
ACKNOWLEDGE = "incident_acknowledge"
SILENCE = "incident_silence"

# Block Kit limits: a header's text, a section's text, a field.
HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000

PHASE_MARK = {
    "Triggered": ":rotating_light:",
    "Assessing": ":mag:",
    "AwaitingApproval": ":raised_hand:",
    "Remediating": ":wrench:",
    "Resolved": ":white_check_mark:",
    "Escalated": ":sos:",
    "Ignored": ":zzz:",
    "Failed": ":x:",
    "Silenced": ":mute:",
}


def escape(text: str) -> str:
    """Slack's mrkdwn reads &, < and > as markup: alarm text must not. Hidden
    characters (bidi overrides...) are spelled out, so text reads as it is."""
    return reveal(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def awaiting_acknowledgement(incident: Incident) -> bool:
    """Open, and nobody has said they are on it yet (a person's approval or
    rejection says so)."""
    status = incident.status
    approval = status.approval
    decided = (
        approval is not None
        and approval.state in ("Approved", "Rejected")
        and (approval.via in ("slack", "kubectl"))
    )
    ended = (status.phase or "Triggered") in ("Resolved", "Failed", "Ignored")
    return status.acknowledgement is None and not decided and not ended


def awaiting_decision(incident: Incident) -> bool:
    approval = incident.status.approval
    return (
        incident.status.phase == "AwaitingApproval"
        and approval is not None
        and approval.state == "Pending"
    )


def fallback_text(incident: Incident) -> str:
    """The notification text (and what screen readers say)."""
    phase = incident.status.phase or "Triggered"
    return reveal(f"[{phase}] {incident.spec.title} ({incident.spec.service.name})")


def incident_blocks(incident: Incident, *, link: str | None = None) -> list[dict[str, Any]]:
    """The message; with `link` (the Incident's page, INCIDENT_LINK_TEMPLATE),
    "View Timeline" opens it too."""
    spec, status = incident.spec, incident.status
    phase = status.phase or "Triggered"
    assessment = status.assessment
    fields = [
        ("Service", spec.service.name),
        ("Severity", spec.severity),
        ("Phase", phase),
        ("Decision", assessment.decision if assessment else "not yet assessed"),
        ("Action", assessment.action if assessment else "-"),
    ]
    if status.truncated_alerts:
        fields.append(("Not delivered", truncation(status.truncated_alerts)))
    grouped = alerts_line(incident)
    if grouped:
        fields.append(("Alerts", grouped))
    if assessment is not None and assessment.evidence is not None:
        # Quotes logs and events: escaped below like every alarm text.
        fields.append(("Evidence", evidence.shown(assessment.evidence)))
    said = (assessment.message if assessment else None) or status.message or spec.summary
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": reveal(f"{PHASE_MARK.get(phase, '')} {spec.title}").strip()[:HEADER_MAX],
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{label}*\n{escape(value)}"[:FIELD_MAX]}
                for label, value in fields
            ],
        },
    ]
    if said:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": escape(said)[:SECTION_MAX]}}
        )
    context = [f"`{kubectl_command(incident)}`"]
    decision = _approval_line(incident)
    if decision:
        context.append(decision)
    ack = incident.status.acknowledgement
    if ack is not None:
        context.append(f"acknowledged by {who_said(ack.by, ack.via)}")
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": " | ".join(context)}]}
    )
    buttons = [_button("View Timeline", TIMELINE, incident, url=link)]
    if phase not in ("Resolved", "Failed", "Ignored"):
        # Mutes the next alarms of this service and alarm for an hour
        # (approvers only); this Incident goes on.
        buttons.insert(0, _button("Silence 1h", SILENCE, incident))
    if awaiting_acknowledgement(incident) and not awaiting_decision(incident):
        # Approving or rejecting acknowledges too: one button fewer then.
        buttons.insert(0, _button("Acknowledge", ACKNOWLEDGE, incident))
    if awaiting_decision(incident):
        buttons = [
            _button("Approve", APPROVE, incident, style="primary"),
            _button("Reject", REJECT, incident, style="danger"),
            *buttons,
        ]
    blocks.append({"type": "actions", "elements": buttons})
    return blocks


def _button(
    text: str,
    action_id: str,
    incident: Incident,
    *,
    style: str | None = None,
    url: str | None = None,
) -> Any:
    button: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": incident.reference,
    }
    if style:
        button["style"] = style
    if url:
        # Slack opens it, and still sends the click (the thread's timeline reply).
        button["url"] = url
    return button


def _approval_line(incident: Incident) -> str:
    approval = incident.status.approval
    if approval is None or not approval.required:
        return ""
    if approval.state == "Pending":
        until = f" until {approval.deadline:%Y-%m-%d %H:%M} UTC" if approval.deadline else ""
        what = f" of {approval_text(approval)}" if approval.target else ""
        return f"waiting for approval{what}{until}"
    who = who_said(approval.by, approval.via)
    return f"{approval.state.lower()} by {who}" if who else approval.state.lower()


def approval_text(approval: Approval) -> str:
    """What is to be approved, in words: "scale_service (desiredCount 4) on r/c/s"."""
    action = approval.action or "the action"
    if approval.parameters:
        said = ", ".join(f"{k} {v}" for k, v in sorted(approval.parameters.items()))
        action += f" ({said})"
    return f"{action} on {approval.target}" if approval.target else action


def who_said(by: str | None, via: str | None) -> str:
    if not by:
        return f"via {via}" if via else ""
    person = f"<@{by}>" if via == "slack" else escape(by)
    return f"{person} via {via}" if via else person


def record_text(record: Record) -> str:
    mark = ":warning: " if record.warning else ""
    return f"{mark}*{record.reason}*: {escape(record.message)}"


# --- the timeline, as "View Timeline" shows it -------------------------------


def timeline_from_entries(incident: Incident, entries: Sequence[Entry]) -> str:
    lines = [f"*Timeline of {escape(incident.reference)}*"]
    for entry in entries:
        when = entry.ts.split("#", 1)[0][:19].replace("T", " ")
        lines.append(f"`{when}` *{escape(entry.kind)}*: {escape(entry.message)}")
    return "\n".join(lines)[:SECTION_MAX]


def timeline_from_status(incident: Incident) -> str:
    """What the Incident itself tells, for when the timeline table cannot be read."""
    status = incident.status
    lines = [
        f"*{escape(incident.reference)}* is *{status.phase or 'Triggered'}*"
        + (f" ({status.occurrences} occurrences)" if status.occurrences > 1 else "")
    ]
    if status.first_seen:
        lines.append(f"`{status.first_seen:%Y-%m-%d %H:%M:%S}` first seen")
    for condition in status.conditions:
        lines.append(
            f"`{condition.last_transition_time:%Y-%m-%d %H:%M:%S}` {condition.type} "
            f"{condition.status} *{condition.reason}*: {escape(condition.message)}"
        )
    if status.remediation:
        remediation = status.remediation
        lines.append(f"remediation of {escape(remediation.target)}: {remediation.result}")
    if status.last_transition:
        last = status.last_transition
        lines.append(f"latest transition to {last.phase} at {last.at:%Y-%m-%d %H:%M:%S}:")
        lines.extend(f"  - {record_text(record)}" for record in last.records)
    return "\n".join(lines)[:SECTION_MAX]

"""Notifications: tell people about an Incident, once per thing to tell.

Channels (Slack, Jira, email, PagerDuty, outbound webhooks) share one
interface. The operator calls `Notifier.announce` with the Incident as it
will be after a transition, and *before* writing that transition: what the
channels return (a Slack message's channel and ts, a Jira key, an email's
message id, a PagerDuty dedup key) lands in the same status write, so
telling costs no extra write to the Incident. A crash between announcing
and writing is repaired by each channel finding its own earlier work (Slack
message metadata, a Jira label, a DynamoDB claim for email, a DynamoDB
record of each event PagerDuty or a webhook receiver took) instead of doing
it twice.

A channel that fails never blocks the Incident: the failure shows in the
`Notified` condition and the incident moves on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..models import Incident
from ..policy import Policy


@dataclass
class Announced:
    """What announcing changed: status.notifications fields and the Notified condition."""

    notifications: dict[str, Any] = field(default_factory=dict)  # camelCase, merged
    status: Literal["True", "False", "Unknown"] = "True"
    reason: str = "Notified"
    message: str = ""


class Notifier(Protocol):
    async def announce(self, incident: Incident, *, policy: Policy) -> Announced: ...

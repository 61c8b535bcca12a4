"""One notification channel (Slack, Jira, email, PagerDuty, webhooks): its interface.

A channel says whether a transition concerns it (`wants`) and then tells
(`tell`). It finds its own earlier work before doing anything (a Slack
message by its metadata, a Jira issue by its label, an email by its claim),
so being asked twice about the same transition, after a crash, does nothing
twice. It reports failures as `ChannelFailed`, saying whether trying again
could help; retries, time limits and the circuit breaker are the fan-out's
business (`fanout.py`), the same for every channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..models import Incident
from ..policy import Policy


@dataclass(frozen=True)
class Told:
    """What a channel did: fields for status.notifications (camelCase), and a note for humans."""

    notifications: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    # Handed to a paced lane that has not delivered it yet (outbox.py): not
    # a failure, not done either; the Notified condition says Unknown, and
    # the transition is told again later, when the lane has delivered it.
    queued: bool = False


class ChannelFailed(Exception):
    """The channel could not tell; the message says why, for the Notified condition."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Channel(Protocol):
    # Lower case ("slack"): in condition messages; capitalized in reasons.
    name: str

    def wants(self, incident: Incident, *, policy: Policy) -> bool:
        """Whether this transition is something to tell here (no I/O)."""
        ...

    async def tell(self, incident: Incident, *, policy: Policy) -> Told: ...

"""The notifier when no channel is configured: the log is the channel."""

from __future__ import annotations

import logging

from .. import metrics
from ..models import Incident
from ..policy import Policy
from . import Announced

log = logging.getLogger(__name__)


class LogNotifier:
    async def announce(self, incident: Incident, *, policy: Policy) -> Announced:
        status = incident.status
        log.info(
            "incident %s is %s",
            incident.metadata.get("name"),
            status.phase,
            extra={
                "incident": incident.metadata.get("name"),
                "phase": status.phase,
                "service": incident.spec.service.name,
                "summary": status.message or incident.spec.title,
            },
        )
        # The log is the channel: counted as one, so the dashboard shows it.
        metrics.NOTIFICATIONS.labels("log", "told").inc()
        return Announced(
            status="True", reason="LoggedOnly", message="no channel configured; written to the log"
        )

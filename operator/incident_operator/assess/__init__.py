"""Assessment: decide what to do about an Incident.

Two assessors share one interface: `rules` (deterministic, from the policy;
the embedded default) and `gemini` (an LLM, when GEMINI_API_KEY is set). An
assessor never raises: any failure becomes an ESCALATE decision with the
reason in `rationale`. `guardrails.enforce` then holds every decision to the
policy, whatever the assessor said.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from ..evidence import Gathered
from ..models import AlertEntry, Assessment, IncidentSpec
from ..policy import Policy


class Assessor(Protocol):
    name: Literal["rules", "gemini"]

    async def assess(
        self,
        *,
        incident: IncidentSpec,
        policy: Policy,
        alerts: Sequence[AlertEntry] = (),
        evidence: Gathered | None = None,
    ) -> Assessment:
        """`alerts`: a grouped Incident's alerts (its spec is the first's);
        `evidence`: what the collectors found (untrusted data, like the alarm)."""
        ...

"""Which assessor applies, and the one call the operator makes to assess."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from ..evidence import Gathered
from ..models import AlertEntry, Assessment, IncidentSpec
from ..policy import Policy
from . import Assessor
from .guardrails import enforce, escalation
from .rules import RulesAssessor

log = logging.getLogger(__name__)


def build_assessor(
    *,
    policy: Policy,
    gemini_api_key: str | None,
    gemini_model: str | None = None,
    gemini_base_url: str | None = None,
    gemini_timeout_s: float = 20,
) -> Assessor:
    """Gemini when the policy asks for it and a key is set; otherwise the
    rules, which need nothing and cannot be unavailable.

    The Gemini SDK is imported here, when first needed: it weighs about
    20 MB in every process that imports it, and the rules need none of it.
    """
    if policy.spec.assessor.type == "gemini" and gemini_api_key:
        from .gemini import DEFAULT_MODEL, GeminiAssessor

        return GeminiAssessor(
            gemini_api_key,
            model=gemini_model or DEFAULT_MODEL,
            base_url=gemini_base_url,
            timeout_s=gemini_timeout_s,
        )
    return RulesAssessor()


async def assess(
    *,
    incident: IncidentSpec,
    policy: Policy,
    assessor: Assessor,
    alerts: Sequence[AlertEntry] = (),
    evidence: Gathered | None = None,
) -> Assessment:
    """Assess, then hold the answer to the policy: what the operator acts on.
    The evidence it was made with is kept with it (a compact summary)."""
    try:
        proposed = await assessor.assess(
            incident=incident, policy=policy, alerts=alerts, evidence=evidence
        )
    except Exception as error:
        # Assessors promise not to raise; if one breaks that promise the
        # incident still gets a decision, and the bug is logged.
        log.exception("assessor raised", extra={"assessor": assessor.name})
        proposed = escalation(
            assessor=assessor.name,
            message=f"{assessor.name} assessor failed; escalated to a human",
            reason=f"{assessor.name} assessor raised {type(error).__name__}: {error}",
        )
    decided = enforce(proposed, policy)
    seen = evidence.status() if evidence is not None else None
    return decided.model_copy(update={"at": datetime.now(UTC), "evidence": seen})

"""Conditions as the Kubernetes API conventions want them.

`lastTransitionTime` moves only when `status` changes; a new reason or
message alone updates the condition in place.
"""

from __future__ import annotations

from datetime import datetime
from typing import get_args

from ..models import Condition, ConditionStatus, ConditionType


def set_condition(
    conditions: list[Condition],
    *,
    type: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
) -> list[Condition]:
    """A copy of `conditions` with `type` set."""
    kept = [c for c in conditions if c.type != type]
    previous = next((c for c in conditions if c.type == type), None)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type, status=status, reason=reason, message=message[:1024], last_transition_time=since
    )
    order = get_args(ConditionType)
    return sorted([*kept, updated], key=lambda c: order.index(c.type))


def get_condition(conditions: list[Condition], type: ConditionType) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)

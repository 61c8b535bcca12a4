"""`MemoryGuard`: action claims in this process's memory (see claims.py for the rules).

Without a table nothing stops a second replica, and a crash forgets every
claim: acceptable for a laptop, not for production (set TIMELINE_TABLE).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime

from ..models import RemediationPolicy
from . import ActionRefused
from .claims import Claim, cap_refusal, cooldown_refusal, hour_key, latest


class MemoryGuard:
    """The same rules as DynamoGuard, in this process's memory only.

    Without a table nothing stops a second replica, and a crash forgets every
    claim: acceptable for a laptop, not for production (set TIMELINE_TABLE).
    Thread-safe; remembers the latest `incidents` claims.
    """

    def __init__(self, *, incidents: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._incidents = incidents
        self._claims: OrderedDict[str, Claim] = OrderedDict()
        self._stamps: dict[str, tuple[float, str]] = {}  # target -> (last action, incident)
        self._hours: dict[tuple[str, str], int] = {}  # (target, hour) -> actions

    async def read(self, incident_id: str) -> Claim | None:
        return self._claims.get(incident_id)

    async def claim(self, claim: Claim, *, limits: RemediationPolicy) -> Claim:
        incident_id, target = claim.incident_id, claim.target
        with self._lock:
            existing = self._claims.get(incident_id)
            if existing is not None:
                return existing
            cooldown = self._cooldown(claim, limits, exempt_own=False)
            restarts = self._hours.get((target, claim.hour), 0)
            cap = (
                cap_refusal(target=target, limits=limits, now=claim.claimed_at)
                if restarts >= limits.max_per_hour
                else None
            )
            if cooldown or cap:
                raise latest(cooldown, cap)
            self._claims[incident_id] = claim
            self._stamps[target] = (claim.cooldown_stamp, incident_id)
            self._hours[(target, claim.hour)] = restarts + 1
            self._forget_old(claim.claimed_at)
        return claim

    async def take_over(
        self, claim: Claim, taken: Claim, *, limits: RemediationPolicy
    ) -> Claim | None:
        with self._lock:
            current = self._claims.get(claim.incident_id)
            if current is None or current.claimed_by != claim.claimed_by or current.receipt:
                return None
            cooldown = self._cooldown(taken, limits, exempt_own=True)
            if cooldown:
                raise cooldown[1]
            self._claims[claim.incident_id] = taken
            self._stamps[taken.target] = (taken.cooldown_stamp, taken.incident_id)
        return taken

    async def complete(self, claim: Claim, *, receipt: str, acted_at: datetime) -> Claim:
        with self._lock:
            current = self._claims.get(claim.incident_id, claim)
            if current.receipt is None:
                current = replace(current, receipt=receipt, acted_at=acted_at)
                self._claims[claim.incident_id] = current
            return current

    async def release(self, claim: Claim) -> None:
        with self._lock:
            current = self._claims.get(claim.incident_id)
            if current is None or current.claimed_by != claim.claimed_by or current.receipt:
                return
            del self._claims[claim.incident_id]
            if self._stamps.get(claim.target) == (claim.cooldown_stamp, claim.incident_id):
                del self._stamps[claim.target]
            bucket = (claim.target, claim.hour)
            if self._hours.get(bucket, 0) > 0:
                self._hours[bucket] -= 1

    def _cooldown(
        self, claim: Claim, limits: RemediationPolicy, *, exempt_own: bool
    ) -> tuple[datetime, ActionRefused] | None:
        last = self._stamps.get(claim.target)
        if last is None or limits.cooldown_seconds == 0:
            return None
        last_at, last_incident = last
        if exempt_own and last_incident == claim.incident_id:
            return None
        if last_at < claim.cooldown_stamp - limits.cooldown_seconds:
            return None
        return cooldown_refusal(
            target=claim.target, limits=limits, last_at=last_at, last_incident=last_incident
        )

    def _forget_old(self, now: datetime) -> None:
        while len(self._claims) > self._incidents:
            self._claims.popitem(last=False)
        # Only the current hour's count matters; hour keys sort as times.
        current = hour_key(now)
        for bucket in [bucket for bucket in self._hours if bucket[1] < current]:
            del self._hours[bucket]

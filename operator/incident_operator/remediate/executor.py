"""Carry out an action at most once per Incident, whichever action it is.

The discipline, the same for every plugin (see plugin.py):

1. The Incident's claim already has a receipt: done before, reuse it.
2. `observe` the target; its marker B says how it is now (for an ECS
   restart, the PRIMARY deployment). `plan` refuses what is out of bounds.
3. Claim the action (claims.py: the claim, the cooldown and the hourly cap
   in one conditional transaction), recording B.
4. `act`; the target's new marker R is the receipt.
5. Write R into the claim.

A process can die anywhere. Dying between 3 and 4 leaves a claim without a
receipt while the target is still at B: the next attempt takes the claim
over (compare-and-swap, so two recoverers cannot both act) and acts.
Dying between 4 and 5 leaves the same claim, but the target has moved on
from B (`happened`): the next attempt adopts that and does not act again.
Comparing markers, rather than times with the claim's time, keeps clock
skew between this host and AWS out of the decision. A change someone else
made in that window is adopted too (for a restart: the service got fresh
tasks, which is all a restart asks for).

A failure that may pass (throttling, a 5xx, no answer: OutcomeUnknown)
keeps the claim: the next attempt adopts the action if the target moved,
and acts otherwise. A failure that certainly did nothing (NothingDone)
releases the claim. Any other failure is settled at once: if the target
moved, the action happened; if not, the claim is released so that the
cooldown and cap do not hold back the next Incident.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import TYPE_CHECKING, Any
from weakref import WeakValueDictionary

import boto3

from ..aws import CLIENT_CONFIG
from ..aws_calls import timed
from ..crashpoints import crash_point
from ..models import RemediationPolicy
from . import (
    ActionCall,
    NothingDone,
    OutcomeUnknown,
    Progress,
    Receipt,
    RemediationFailed,
    registry,
)
from .claims import Claim, ClaimGuard, new_claim, taken_over
from .dynamo_guard import DynamoGuard
from .ecs import EcsClients
from .memory_guard import MemoryGuard
from .plugin import Action, Context, Observation, Request

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)


class Executor:
    """Runs any registered action on a target, once per Incident.

    With a `MemoryGuard` the claims live in this process only: it keeps one
    process from acting twice for one Incident, but not two replicas, and
    not a process that crashed and came back. Production uses a
    `DynamoGuard` (TIMELINE_TABLE).
    """

    def __init__(self, *, context: Context, guard: ClaimGuard | None = None) -> None:
        if guard is None:
            log.warning("No TIMELINE_TABLE: actions are guarded within this process only.")
            guard = MemoryGuard()
        self._guard = guard
        self._context = context
        self._plugins: dict[str, Action[Any, Any, Any]] = {}
        # One attempt at a time per Incident in this process, so that two
        # coroutines never both find a claim unfinished and both act on it.
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    def _plugin(self, name: str) -> Action[Any, Any, Any]:
        found = self._plugins.get(name)
        if found is None:
            cls = registry.plugin(name)
            if cls is None:
                raise RemediationFailed(f"{name} is not an action this operator can carry out")
            found = self._plugins[name] = cls(self._context)
        return found

    async def execute(self, call: ActionCall, *, limits: RemediationPolicy) -> Receipt:
        plugin = self._plugin(call.action)
        request = _request(call)
        lock = self._locks.setdefault(call.incident_id, asyncio.Lock())
        async with lock:
            claim = await self._guard.read(call.incident_id)
            if claim is not None and claim.receipt:
                return _receipt(claim, reused=True)
            before = await plugin.observe(request)
            owner = uuid.uuid4().hex
            if claim is None:
                plugin.plan(request, before)
                fresh = new_claim(
                    incident_id=call.incident_id,
                    action=call.action,
                    target=str(call.target),
                    owner=owner,
                    before=before.marker,
                    now=self._context.clock(),
                )
                claim = await self._guard.claim(fresh, limits=limits)
            if claim.claimed_by != owner:
                claim = await self._resume(
                    plugin, claim, request, now=before, owner=owner, limits=limits
                )
                if claim.receipt:
                    return _receipt(claim, reused=True)
            return await self._act(plugin, claim, request, before=before)

    async def verify(self, call: ActionCall, *, receipt: str) -> Progress:
        return await self._plugin(call.action).verify(_request(call), receipt)

    async def _resume(
        self,
        plugin: Action[Any, Any, Any],
        claim: Claim,
        request: Request[Any, Any, Any],
        *,
        now: Observation,
        owner: str,
        limits: RemediationPolicy,
    ) -> Claim:
        """Finish an earlier attempt's claim: adopt what it did, or take the claim over."""
        if claim.receipt:
            return claim
        if claim.before is not None:
            done = plugin.happened(request, claim.before, now)
        else:
            # A claim that never recorded what it saw: fall back to time.
            done = now.since is not None and now.since > claim.claimed_at
        if done:
            log.info(
                "%s of %s was done by an earlier attempt; adopting %s",
                claim.action,
                claim.target,
                now.marker,
                extra={"incident": claim.incident_id, "target": claim.target},
            )
            return await self._guard.complete(
                claim, receipt=now.marker, acted_at=now.since or claim.claimed_at
            )
        taken = await self._guard.take_over(
            claim,
            taken_over(claim, owner=owner, before=now.marker, now=self._context.clock()),
            limits=limits,
        )
        if taken is not None:
            return taken
        current = await self._guard.read(claim.incident_id)
        if current is not None and current.receipt:
            return current
        raise OutcomeUnknown(
            f"Another process is acting on {claim.target} for this Incident right now."
        )

    async def _act(
        self,
        plugin: Action[Any, Any, Any],
        claim: Claim,
        request: Request[Any, Any, Any],
        *,
        before: Observation,
    ) -> Receipt:
        crash_point("after-claim")
        log.info(
            "%s on %s",
            claim.action,
            claim.target,
            extra={"incident": claim.incident_id, "target": claim.target},
        )
        try:
            after = await plugin.act(request, before)
        except NothingDone:
            await self._release(claim)
            raise
        except OutcomeUnknown:
            raise
        except RemediationFailed as error:
            return await self._settle(plugin, claim, request, error=error)
        crash_point("after-act")
        acted_at = self._context.clock()
        try:
            stored = await self._guard.complete(claim, receipt=after.marker, acted_at=acted_at)
        except RemediationFailed:
            # The action happened; only writing it down failed. The claim
            # still records the target as it was, so the next attempt sees
            # it moved on and adopts this.
            log.warning(
                "%s of %s done (%s), but the claim was not updated",
                claim.action,
                claim.target,
                after.marker,
                exc_info=True,
                extra={"incident": claim.incident_id, "target": claim.target},
            )
        else:
            if stored.receipt != after.marker:
                log.warning(
                    "Claim of %s already named %s; ours is %s",
                    claim.incident_id,
                    stored.receipt,
                    after.marker,
                    extra={"incident": claim.incident_id, "target": claim.target},
                )
        return Receipt(ref=after.marker, started_at=acted_at)

    async def _settle(
        self,
        plugin: Action[Any, Any, Any],
        claim: Claim,
        request: Request[Any, Any, Any],
        *,
        error: RemediationFailed,
    ) -> Receipt:
        """After a failed act: adopt the action if it happened, else release."""
        try:
            now = await plugin.observe(request)
        except RemediationFailed as unknown:
            raise OutcomeUnknown(
                f"{error}; and then: {unknown}. The claim is kept until a later attempt "
                "for this Incident can see the target."
            ) from error
        if claim.before is not None and plugin.happened(request, claim.before, now):
            at = now.since or self._context.clock()
            stored = await self._guard.complete(claim, receipt=now.marker, acted_at=at)
            return _receipt(stored, reused=False)
        await self._release(claim)
        raise error

    async def _release(self, claim: Claim) -> None:
        try:
            await self._guard.release(claim)
        except RemediationFailed:
            # Reported, not raised: the caller is already failing with the
            # cause that matters (why nothing was done). A stale cooldown
            # stamp or count expires by itself.
            log.warning(
                "Could not release the action claim of %s",
                claim.incident_id,
                exc_info=True,
                extra={"incident": claim.incident_id, "target": claim.target},
            )


def build_executor(
    *, table: str | None, region: str | None, kube: ApiClient | None = None
) -> Executor:
    """The executor of this installation: claims in `table` (TIMELINE_TABLE) if set."""
    guard: ClaimGuard | None = None
    if table is not None:
        client = timed(boto3.client("dynamodb", region_name=region, config=CLIENT_CONFIG))
        guard = DynamoGuard(client=client, table=table)
    return Executor(context=Context(ecs=EcsClients(region=region), kube=kube), guard=guard)


def _request(call: ActionCall) -> Request[Any, Any, Any]:
    """The call as the plugin reads it: parameters and settings as its own models."""
    return Request(
        target=call.target,
        parameters=registry.parameters(call.action, call.parameters),
        settings=registry.settings(call.action, call.settings),
        incident_id=call.incident_id,
        alarm=call.alarm,
    )


def _receipt(claim: Claim, *, reused: bool) -> Receipt:
    assert claim.receipt is not None
    return Receipt(ref=claim.receipt, started_at=claim.acted_at or claim.claimed_at, reused=reused)

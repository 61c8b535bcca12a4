"""Gather the evidence of one assessment: every enabled collector at once,
within the policy's budget.

A collector that raises is recorded as failed, one still running when the
budget is spent as timed out (and cancelled): neither blocks the decision,
which is made with whatever the others found. Nothing here raises.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from ..aws import explain
from ..models import EvidencePolicy, Incident
from . import Finding, Found, Gathered, Skip, Status
from .asking import Asker
from .collector import Context, Request
from .registry import AnyCollector, collectors

log = logging.getLogger(__name__)

# One collector's data for the assessor, as JSON, at most: a few lines and
# numbers fit easily; more is a collector's bug, and is not passed on.
MAX_DATA_BYTES = 6144


def _failure(error: BaseException) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, ClientError | BotoCoreError):
        return explain(error, doing="read it")
    detail = str(error)
    return f"{type(error).__name__}: {detail}" if detail else type(error).__name__


async def run(collector: AnyCollector, request: Request[Any], started: float) -> Finding:
    """One collector's finding, whatever happens (but cancellation)."""

    def done(status: Status, summary: str, found: Found | None = None) -> Finding:
        elapsed = int((time.monotonic() - started) * 1000)
        return Finding(collector.name, status, summary, elapsed, found)

    try:
        found = await collector.collect(request)
    except Skip as why:
        return done("skipped", str(why))
    except asyncio.CancelledError:
        raise
    except Exception as error:
        log.warning(
            "evidence collector failed",
            exc_info=True,
            extra={"incident": request.incident.metadata.get("name"), "collector": collector.name},
        )
        return done("failed", _failure(error))
    size = len(json.dumps(found.data, default=str))
    if size > MAX_DATA_BYTES:
        return done("failed", f"its data was {size} bytes, over {MAX_DATA_BYTES}; not used")
    return done("ok", found.summary, found)


async def gather(
    incident: Incident,
    *,
    policy: EvidencePolicy,
    context: Context,
    only: Mapping[str, type[AnyCollector]] | None = None,
) -> Gathered:
    """What the enabled collectors (`only` these, in tests) find within the budget."""
    now = context.clock()
    started = time.monotonic()
    budget = float(policy.budget_seconds)
    tasks: dict[str, asyncio.Task[Finding]] = {}
    skipped: dict[str, Finding] = {}
    for name, cls in (only if only is not None else collectors()).items():
        chosen = cls.Settings.model_validate(policy.collectors.get(name, {}))
        if not chosen.enabled:
            skipped[name] = Finding(name, "skipped", "disabled by the policy", 0)
            continue
        request = Request(incident=incident, settings=chosen, now=now)
        tasks[name] = asyncio.create_task(run(cls(context), request, started))
    if tasks:
        await asyncio.wait(tasks.values(), timeout=budget)
    findings: dict[str, Finding] = dict(skipped)
    late = [task for task in tasks.values() if not task.done()]
    for task in late:
        task.cancel()
    # A cancelled collector stops at its next await (a call on an evidence
    # thread finishes there, unseen).
    await asyncio.gather(*late, return_exceptions=True)
    for name, task in tasks.items():
        if not task.cancelled():
            findings[name] = task.result()
        else:
            elapsed = int((time.monotonic() - started) * 1000)
            findings[name] = Finding(
                name, "timedOut", f"no answer within the budget of {budget:g} s", elapsed
            )
    order = list(only if only is not None else collectors())
    enabled = {name: cls for name, cls in (only or collectors()).items() if name not in skipped}
    more = None
    if policy.model_calls and enabled:
        more = Asker(
            incident=incident,
            context=context,
            collectors=enabled,
            settings=policy.collectors,
            deadline=started + budget,
            calls_left=policy.model_calls,
        )
    return Gathered(
        more=more,
        findings=tuple(findings[name] for name in order if name in findings),
        gathered_at=now,
        elapsed_ms=int((time.monotonic() - started) * 1000),
        budget_ms=int(budget * 1000),
    )

"""The kopf handlers. They only load state and hand it to the Reconciler
(and tell the census and the retention what the watch saw).

Only `on.event` handlers are used, deliberately: they keep no progress or
diff-base annotations on the object and need no finalizer, so kopf itself
adds no writes to an Incident. The phase machine is driven by status, which
kopf's change-detecting handlers ignore anyway; waits (approvals, rollouts)
are in-process wake-ups, and a restarted operator picks every open Incident
up again from the initial listing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from kubernetes import client

from ..config import Settings
from ..models import GROUP, VERSION, ResponsePolicySpec
from ..policy import Policy
from .wiring import build_parts

log = logging.getLogger(__name__)

LIST_CHUNK = 500


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own Events tell the story; kopf's would add a write per handler run.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    # At startup every Incident arrives at once. List them in chunks, so
    # the handler (which only queues a pass) keeps up between chunks, and
    # let kopf's per-Incident workers leave soon after (default 5 s): with
    # 5,000 Incidents, one unchunked list peaked 60 MB higher.
    settings.watching.chunk_size = LIST_CHUNK
    settings.queueing.idle_timeout = 0.2
    parts = build_parts(Settings())
    memo.parts, memo.policies, api = parts, parts.policies, parts.api
    memo.reconciler, memo.retention, memo.census = parts.reconciler, parts.retention, parts.census
    # Load every ResponsePolicy before the first Incident is looked at, so
    # no Incident is ever assessed under the default by mistake.
    listed = await asyncio.to_thread(
        client.CustomObjectsApi(api).list_cluster_custom_object, GROUP, VERSION, "responsepolicies"
    )
    for item in listed["items"]:
        _put_policy(memo, item)
    # And every Silence: an alarm that one mutes must not be announced first.
    silences = await asyncio.to_thread(
        client.CustomObjectsApi(api).list_cluster_custom_object, GROUP, VERSION, "silences"
    )
    for item in silences["items"]:
        parts.silences.put(item)
    memo.silences_task = asyncio.create_task(parts.silences.run(), name="silences")
    # Kept in memo: the event loop holds tasks only weakly.
    memo.retention_task = asyncio.create_task(parts.retention.run(), name="retention")
    log.info("operator configured", extra={"policies": len(listed["items"])})


@kopf.on.event(GROUP, VERSION, "incidents")
async def incident_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if event["type"] == "DELETED":
        uid = body["metadata"]["uid"]
        memo.reconciler.forget(uid)
        memo.retention.forget(uid)
        memo.census.forget(uid)
        return
    incident = event["object"]
    memo.census.observe(incident)
    memo.retention.observe(incident)
    # Queued, not awaited: the pass runs in the reconciler's own bounded
    # pool, so kopf's per-object worker for this event ends at once.
    memo.reconciler.submit(incident)


@kopf.on.event(GROUP, VERSION, "responsepolicies")
async def policy_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if event["type"] == "DELETED":
        memo.policies.remove(body["metadata"]["namespace"], body["metadata"]["name"])
    else:
        _put_policy(memo, dict(body))
    memo.retention.policies_changed()


@kopf.on.event(GROUP, VERSION, "silences")
async def silence_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    metadata = body["metadata"]
    silences = memo.parts.silences
    if event["type"] == "DELETED":
        silences.remove(metadata["namespace"], metadata["name"])
        changed = True
    else:
        changed = silences.put(dict(event["object"]))
    if not changed:
        return  # a status update (state, muted): nothing it mutes changed
    try:
        await memo.reconciler.silences_changed(metadata["namespace"])
    except Exception as error:  # the API unreachable: they wake at their silence's end anyway
        log.warning(
            "could not look at the silenced Incidents again",
            extra={"silence": metadata["name"], "error": str(error)[:300]},
        )


def _put_policy(memo: kopf.Memo, body: dict[str, Any]) -> None:
    metadata = body["metadata"]
    try:
        spec = ResponsePolicySpec.model_validate(body.get("spec") or {})
    except ValueError as error:
        log.warning(
            "ignoring invalid ResponsePolicy",
            extra={"policy": metadata["name"], "error": str(error)},
        )
        return
    memo.policies.put(metadata["namespace"], Policy(metadata["name"], spec))

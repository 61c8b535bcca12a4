"""The Silences as the operator keeps them: current from the watch, handed to
the phase machine, their status kept, deleted a day after they expire.

- `put`/`remove` from the watch; `in_namespace` is what the phase machine
  gets ("the silences of this Incident's namespace", in force or not: it
  tells a silence that ended from one that was deleted).
- `run` keeps each Silence's status current (state, the current or next
  window, the matchers in one line) by sleeping until the next one changes
  state, and deletes a Silence a day after it expired (its uid and
  resourceVersion as preconditions: an edited Silence is judged again).
- `count_muted` adds one to a Silence's `muted` once an Incident was
  written as muted by it. Written after the Incident, so a crash between the
  two loses one count, never counts twice.

Only the leader runs this, as it runs everything that acts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client

from ..models import GROUP, VERSION
from ..silence import Silence, describe, expired_at, state

log = logging.getLogger(__name__)

PLURAL = "silences"
# Expired Silences stay this long (`kubectl get silences` shows what just
# ended), then the operator deletes them.
EXPIRED_KEPT = timedelta(days=1)
# Look at least this often, and this soon again after a failed write.
MAX_SLEEP_SECONDS = 60.0
RETRY_SECONDS = 10.0
WRITE_ATTEMPTS = 3


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Silences:
    def __init__(self, *, api: client.ApiClient, clock: Callable[[], datetime] = _utcnow) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._clock = clock
        self._by_namespace: dict[str, dict[str, Silence]] = {}
        self._wake = asyncio.Event()
        self._closed = False

    # --- from the watch -------------------------------------------------------

    def put(self, body: Mapping[str, Any]) -> bool:
        """A Silence as the watch saw it; True if what it mutes may have changed
        (new, edited, or no longer valid), False for a status update."""
        metadata = body["metadata"]
        namespace, name = metadata["namespace"], metadata["name"]
        known = self._by_namespace.get(namespace, {}).get(name)
        try:
            silence = Silence.model_validate(body)
        except ValueError as error:
            log.warning(
                "ignoring an invalid Silence",
                extra={"silence": name, "namespace": namespace, "error": str(error)[:500]},
            )
            self.remove(namespace, name)
            return known is not None
        self._by_namespace.setdefault(namespace, {})[name] = silence
        self._wake.set()
        return known is None or _spec_of(known) != _spec_of(silence)

    def remove(self, namespace: str, name: str) -> None:
        self._by_namespace.get(namespace, {}).pop(name, None)

    def in_namespace(self, namespace: str) -> list[Silence]:
        return list(self._by_namespace.get(namespace, {}).values())

    # --- the keeper -----------------------------------------------------------

    async def run(self) -> None:
        """Keep every Silence's status current, delete the long expired; until closed."""
        while not self._closed:
            self._wake.clear()
            now = self._clock()
            due: list[datetime] = []
            failed = False
            for namespace, silences in list(self._by_namespace.items()):
                for silence in list(silences.values()):
                    next_at, ok = await self._keep(namespace, silence, now)
                    failed |= not ok
                    if next_at is not None:
                        due.append(next_at)
            sleep = MAX_SLEEP_SECONDS
            if due:
                sleep = min(sleep, (min(due) - self._clock()).total_seconds())
            if failed:
                sleep = min(sleep, RETRY_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(sleep, 0.05))

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def _keep(
        self, namespace: str, silence: Silence, now: datetime
    ) -> tuple[datetime | None, bool]:
        """Bring one Silence's status up to date, or delete it; when to look
        again, and whether the writes worked."""
        current, window = state(silence, now)
        ended = expired_at(silence)
        if current == "expired" and ended is not None and ended + EXPIRED_KEPT <= now:
            return None, await self._delete(namespace, silence)
        wanted: dict[str, Any] = {
            "state": current,
            "matchers": describe(silence.spec)[:4096],
            "startsAt": _stamp(window.start) if window else None,
            "endsAt": _stamp(window.end) if window else None,
        }
        shown = silence.status.to_api()
        have = {key: shown.get(key) for key in ("state", "matchers", "startsAt", "endsAt")}
        ok = True
        if _normal(have) != _normal(wanted):
            ok = await self._patch_status(namespace, silence.name, wanted)
        if window is None:
            next_at = ended + EXPIRED_KEPT if ended is not None else None
        else:
            next_at = window.start if current == "pending" else window.end
        return next_at, ok

    async def count_muted(self, namespace: str, name: str) -> None:
        """One more alarm muted by this Silence."""
        for _ in range(WRITE_ATTEMPTS):
            try:
                body = await asyncio.to_thread(
                    self._objects.get_namespaced_custom_object,
                    GROUP, VERSION, namespace, PLURAL, name,
                )  # fmt: skip
                muted = int((body.get("status") or {}).get("muted") or 0)
                patch = {
                    "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
                    "status": {"muted": muted + 1},
                }
                await asyncio.to_thread(
                    self._objects.patch_namespaced_custom_object_status,
                    GROUP, VERSION, namespace, PLURAL, name, patch,
                )  # fmt: skip
                return
            except client.ApiException as error:
                if error.status == 409:
                    continue  # written meanwhile: count on the fresh one
                if error.status != 404:  # gone: nothing to count on
                    log.warning(
                        "could not count a muted alarm",
                        extra={"silence": name, "namespace": namespace, "status": error.status},
                    )
                return
            except Exception as error:  # unreachable, timed out: a count is not worth more
                log.warning(
                    "could not count a muted alarm",
                    extra={"silence": name, "namespace": namespace, "error": str(error)},
                )
                return

    async def _patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        try:
            body = await asyncio.to_thread(
                self._objects.patch_namespaced_custom_object_status,
                GROUP, VERSION, namespace, PLURAL, name, {"status": status},
            )  # fmt: skip
        except client.ApiException as error:
            if error.status == 404:
                self.remove(namespace, name)
                return True
            log.warning(
                "could not update a Silence's status",
                extra={"silence": name, "namespace": namespace, "status": error.status},
            )
            return False
        except Exception as error:
            log.warning(
                "could not update a Silence's status",
                extra={"silence": name, "namespace": namespace, "error": str(error)},
            )
            return False
        self.put(body)  # so the next round does not write it again before the watch says so
        return True

    async def _delete(self, namespace: str, silence: Silence) -> bool:
        metadata = silence.metadata
        options = {
            "preconditions": {
                "uid": metadata.get("uid"),
                "resourceVersion": metadata.get("resourceVersion"),
            }
        }
        try:
            await asyncio.to_thread(
                self._objects.delete_namespaced_custom_object,
                GROUP, VERSION, namespace, PLURAL, silence.name, body=options,
            )  # fmt: skip
        except client.ApiException as error:
            if error.status in (404, 409):  # gone, or changed since: its watch event decides
                if error.status == 404:
                    self.remove(namespace, silence.name)
                return True
            log.warning(
                "could not delete an expired Silence",
                extra={"silence": silence.name, "namespace": namespace, "status": error.status},
            )
            return False
        except Exception as error:
            log.warning(
                "could not delete an expired Silence",
                extra={"silence": silence.name, "namespace": namespace, "error": str(error)},
            )
            return False
        self.remove(namespace, silence.name)
        log.info(
            "deleted a day after it expired",
            extra={"silence": silence.name, "namespace": namespace},
        )
        return True


def _spec_of(silence: Silence) -> dict[str, Any]:
    return silence.spec.to_api()


def _stamp(moment: datetime) -> str:
    """As `kubectl get silences` shows it: 2026-12-01T23:30:00Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _normal(fields: dict[str, Any]) -> dict[str, Any]:
    """Status fields comparable whatever their spelling of a time."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is not None and key in ("startsAt", "endsAt"):
            value = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        out[key] = value
    return out

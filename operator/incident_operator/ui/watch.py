"""The UI's copy of the Incidents: listed once, then followed with a watch
(following.py), so that pages read memory, not the API server.

Every change wakes the pages following the list (Server-Sent Events): each
follower has an asyncio.Event, set from the watch's thread through its
loop, so a burst of changes is one wake-up, and a slow browser never makes
the thread wait.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pydantic
from kubernetes import client

from ..following import Following
from ..models import Incident

log = logging.getLogger(__name__)


class IncidentWatch:
    def __init__(self, *, api: client.ApiClient, namespace: str) -> None:
        self._incidents: dict[str, Incident] = {}
        self._synced = threading.Event()
        self._followers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        self.version = 0  # counts changes, so a page can tell it is behind
        self._following = Following(
            api=api,
            namespace=namespace,
            plural="incidents",
            listed=self._listed,
            changed=self._changed,
        )

    def start(self) -> IncidentWatch:
        self._following.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def stop(self) -> None:
        self._following.stopped.set()

    def incidents(self) -> list[Incident]:
        return list(self._incidents.values())

    def get(self, namespace: str, name: str) -> Incident | None:
        return self._incidents.get(f"{namespace}/{name}")

    # --- followers (the SSE streams) -----------------------------------------

    def follow(self) -> asyncio.Event:
        """An Event set whenever an Incident changes; `unfollow` it when done."""
        changed = asyncio.Event()
        with self._lock:
            self._followers.add((asyncio.get_running_loop(), changed))
        return changed

    def unfollow(self, changed: asyncio.Event) -> None:
        with self._lock:
            self._followers = {f for f in self._followers if f[1] is not changed}

    def _wake(self) -> None:
        self.version += 1
        with self._lock:
            followers = list(self._followers)
        for loop, changed in followers:
            try:
                loop.call_soon_threadsafe(changed.set)
            except RuntimeError:  # its loop is closed: the page is gone
                self.unfollow(changed)

    # --- from the watch's thread ---------------------------------------------------

    def _listed(self, items: list[dict[str, Any]]) -> None:
        incidents = {}
        for item in items:
            incident = _parse(item)
            if incident is not None:
                incidents[incident.reference] = incident
        self._incidents = incidents  # replaced whole: readers never see it half-built
        self._synced.set()
        self._wake()

    def _changed(self, kind: str, item: dict[str, Any]) -> None:
        metadata = item.get("metadata", {})
        key = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
        incidents = dict(self._incidents)
        incident = _parse(item) if kind != "DELETED" else None
        if incident is None:
            incidents.pop(key, None)
        else:
            incidents[key] = incident
        self._incidents = incidents
        self._wake()


def _parse(item: dict[str, Any]) -> Incident | None:
    try:
        return Incident.model_validate(item)
    except pydantic.ValidationError as error:
        name = item.get("metadata", {}).get("name", "")
        log.warning(
            "not showing an Incident that does not parse",
            extra={"incident": name, "error": str(error)[:300]},
        )
        return None

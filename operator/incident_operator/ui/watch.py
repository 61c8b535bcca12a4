"""The UI's copy of the Incidents: listed once, then followed with a watch.

A thread lists the namespace's Incidents, then follows a watch; when the
watch ends or fails it lists again, after a pause that doubles up to 30 s
while the API server keeps failing (as the webhook follows policies,
ingest/policies.py). Every change wakes the pages following the list
(Server-Sent Events): each follower has an asyncio.Event, set from the
thread through its loop, so a burst of changes is one wake-up, and a slow
browser never makes the thread wait.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pydantic
from kubernetes import client, watch

from ..models import GROUP, VERSION, Incident

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
MAX_PAUSE = 30.0


class IncidentWatch:
    def __init__(self, *, api: client.ApiClient, namespace: str) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._namespace = namespace
        self._incidents: dict[str, Incident] = {}
        self._synced = threading.Event()
        self._stopped = threading.Event()
        self._followers: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        self.version = 0  # counts changes, so a page can tell it is behind

    def start(self) -> IncidentWatch:
        threading.Thread(target=self._follow, name="incident-watch", daemon=True).start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    def stop(self) -> None:
        self._stopped.set()

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

    def _changed(self) -> None:
        self.version += 1
        with self._lock:
            followers = list(self._followers)
        for loop, changed in followers:
            try:
                loop.call_soon_threadsafe(changed.set)
            except RuntimeError:  # its loop is closed: the page is gone
                self.unfollow(changed)

    # --- the thread -------------------------------------------------------------

    def _follow(self) -> None:
        pause = 1.0
        while not self._stopped.is_set():
            try:
                version = self._list()
                pause = 1.0
                self._watch(version)
            except Exception as error:  # keep following whatever the API server does
                log.warning("incident watch failed", extra={"error": str(error)[:300]})
                self._stopped.wait(pause)
                pause = min(pause * 2, MAX_PAUSE)

    def _list(self) -> str:
        listed = self._objects.list_namespaced_custom_object(
            GROUP, VERSION, self._namespace, "incidents", _request_timeout=30
        )
        incidents = {}
        for item in listed["items"]:
            incident = _parse(item)
            if incident is not None:
                incidents[incident.reference] = incident
        self._incidents = incidents  # replaced whole: readers never see it half-built
        self._synced.set()
        self._changed()
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> None:
        stream = watch.Watch().stream(
            self._objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._namespace,
            "incidents",
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
        )
        for event in stream:
            if self._stopped.is_set():
                return
            if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                raise RuntimeError(str(event["object"])[:300])
            item = event["object"]
            metadata = item.get("metadata", {})
            key = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
            incidents = dict(self._incidents)
            incident = _parse(item) if event["type"] != "DELETED" else None
            if incident is None:
                incidents.pop(key, None)
            else:
                incidents[key] = incident
            self._incidents = incidents
            self._changed()


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

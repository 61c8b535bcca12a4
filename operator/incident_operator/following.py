"""Follow one kind of custom object in one namespace: a list, then a watch.

A thread lists the objects, hands them over whole, then hands over each
change the watch reports. Each watch request ends after WATCH_SECONDS and
the next goes on from the last resourceVersion seen (cheap for the API
server, and `stopped` takes effect within it); when a watch fails (a 410
Gone included) it lists again, after a pause that doubles up to MAX_PAUSE
while the API server keeps failing. Used by the webhook (its
ResponsePolicies) and the UI (its Incidents): each keeps its own copy and
decides what an object means to it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch

from .models import GROUP, VERSION

log = logging.getLogger(__name__)

WATCH_SECONDS = 10
MAX_PAUSE = 30.0

Listed = Callable[[list[dict[str, Any]]], None]
# (event type: ADDED, MODIFIED or DELETED; the object)
Changed = Callable[[str, dict[str, Any]], None]


class Following:
    def __init__(
        self,
        *,
        api: client.ApiClient,
        namespace: str,
        plural: str,
        listed: Listed,
        changed: Changed,
    ) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._namespace = namespace
        self._plural = plural
        self._listed = listed
        self._changed = changed
        self.stopped = threading.Event()

    def start(self) -> None:
        """Follow from a thread of its own; returns at once."""
        name = f"{self._plural}-watch"
        threading.Thread(target=self._follow, name=name, daemon=True).start()

    def _follow(self) -> None:
        pause = 1.0
        while not self.stopped.is_set():
            try:
                version = self._list()
                pause = 1.0
                self._watch(version)
            except Exception as error:  # keep following whatever the API server does
                if self.stopped.is_set():
                    return
                log.warning(
                    "watch failed", extra={"watching": self._plural, "error": str(error)[:300]}
                )
                self.stopped.wait(pause)
                pause = min(pause * 2, MAX_PAUSE)

    def _list(self) -> str:
        listed = self._objects.list_namespaced_custom_object(
            GROUP, VERSION, self._namespace, self._plural, _request_timeout=30
        )
        self._listed(list(listed["items"]))
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> None:
        while not self.stopped.is_set():
            version = self._watch_once(version)

    def _watch_once(self, version: str) -> str:
        """Follow one watch request; the resourceVersion to go on from."""
        stream = watch.Watch().stream(
            self._objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._namespace,
            self._plural,
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
        )
        for event in stream:
            if self.stopped.is_set():
                return version
            if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                raise RuntimeError(str(event["object"])[:300])
            version = event["object"].get("metadata", {}).get("resourceVersion", version)
            self._changed(event["type"], event["object"])
        return version

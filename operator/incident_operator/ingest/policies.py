"""The webhook's view of the ResponsePolicies: which alarms group together.

Grouping is decided where alarms arrive, so the webhook needs the policies
(read-only: get, list, watch). A thread lists them once, then follows a
watch; when the watch ends or fails it lists again, after a pause that
doubles up to 30 s while the API server keeps failing. Until the first list
succeeded, nothing is grouped (each alarm is its own Incident, as without a
policy): an alarm is never held back waiting for policies.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pydantic
from kubernetes import client, watch

from ..grouping import Group, group_of
from ..models import GROUP, VERSION, ResponsePolicySpec
from ..policy import Policy
from .alarm import ReceivedAlarm

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
MAX_PAUSE = 30.0


class PolicyWatch:
    def __init__(self, *, api: client.ApiClient, namespace: str) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._namespace = namespace
        self._policies: dict[str, Policy] = {}
        self._synced = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PolicyWatch:
        """Follow the policies from a thread of its own; returns at once."""
        self._thread = threading.Thread(target=self._follow, name="policy-watch", daemon=True)
        self._thread.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        """Whether the first list arrived within `timeout` seconds."""
        return self._synced.wait(timeout)

    def stop(self) -> None:
        self._stopped.set()

    def group(self, alarm: ReceivedAlarm) -> Group | None:
        """The alarm's group under the policy that applies to it; None: its own Incident."""
        return group_of(list(self._policies.values()), alarm.incident_spec())

    # --- the thread -----------------------------------------------------------

    def _follow(self) -> None:
        pause = 1.0
        while not self._stopped.is_set():
            try:
                version = self._list()
                pause = 1.0
                self._watch(version)
            except Exception as error:  # keep following whatever the API server does
                log.warning("policy watch failed", extra={"error": str(error)[:300]})
                self._stopped.wait(pause)
                pause = min(pause * 2, MAX_PAUSE)

    def _list(self) -> str:
        listed = self._objects.list_namespaced_custom_object(
            GROUP, VERSION, self._namespace, "responsepolicies", _request_timeout=10
        )
        policies = {}
        for item in listed["items"]:
            policy = _parse(item)
            if policy is not None:
                policies[policy.name] = policy
        self._policies = policies
        self._synced.set()
        return str(listed["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> None:
        stream = watch.Watch().stream(
            self._objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self._namespace,
            "responsepolicies",
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
        )
        for event in stream:
            if self._stopped.is_set():
                return
            item = event["object"]
            name = item.get("metadata", {}).get("name", "")
            policies = dict(self._policies)
            policy = _parse(item) if event["type"] != "DELETED" else None
            if policy is None:
                policies.pop(name, None)
            else:
                policies[name] = policy
            self._policies = policies  # replaced whole: readers never see it half-built


def _parse(item: dict[str, Any]) -> Policy | None:
    name = item.get("metadata", {}).get("name", "")
    try:
        return Policy(name, ResponsePolicySpec.model_validate(item.get("spec") or {}))
    except pydantic.ValidationError as error:
        log.warning(
            "ignoring an invalid ResponsePolicy", extra={"policy": name, "error": str(error)[:300]}
        )
        return None

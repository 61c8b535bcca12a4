"""The webhook's view of the ResponsePolicies: which alarms group together.

Grouping is decided where alarms arrive, so the webhook needs the policies
(read-only: get, list, watch), followed from a thread (following.py: a
list, then a watch, again after a failure). Until the first list
succeeded, nothing is grouped (each alarm is its own Incident, as without a
policy): an alarm is never held back waiting for policies.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pydantic
from kubernetes import client

from ..following import Following
from ..grouping import Group, group_of
from ..models import ResponsePolicySpec
from ..policy import Policy
from .alarm import ReceivedAlarm

log = logging.getLogger(__name__)


class PolicyWatch:
    def __init__(self, *, api: client.ApiClient, namespace: str) -> None:
        self._policies: dict[str, Policy] = {}
        self._view: tuple[tuple[Policy, ...], bool] = ((), False)
        self._synced = threading.Event()
        self._following = Following(
            api=api,
            namespace=namespace,
            plural="responsepolicies",
            listed=self._listed,
            changed=self._changed,
        )

    def start(self) -> PolicyWatch:
        """Follow the policies from a thread of its own; returns at once."""
        self._following.start()
        return self

    def wait_synced(self, timeout: float) -> bool:
        """Whether the first list arrived within `timeout` seconds."""
        return self._synced.wait(timeout)

    def stop(self) -> None:
        self._following.stopped.set()

    def group(self, alarm: ReceivedAlarm) -> Group | None:
        """The alarm's group under the policy that applies to it; None: its own Incident."""
        policies, grouping = self._view
        if not grouping:
            return None  # no policy groups: nothing to work out per alarm
        return group_of(policies, alarm.incident_spec())

    # --- from the thread --------------------------------------------------------

    def _listed(self, items: list[dict[str, Any]]) -> None:
        policies = {}
        for item in items:
            policy = _parse(item)
            if policy is not None:
                policies[policy.name] = policy
        self._keep(policies)
        self._synced.set()

    def _changed(self, kind: str, item: dict[str, Any]) -> None:
        name = item.get("metadata", {}).get("name", "")
        policies = dict(self._policies)
        policy = _parse(item) if kind != "DELETED" else None
        if policy is None:
            policies.pop(name, None)
        else:
            policies[name] = policy
        self._keep(policies)

    def _keep(self, policies: dict[str, Policy]) -> None:
        self._policies = policies
        # Replaced whole: the request path never sees it half-built.
        grouping = any(policy.spec.grouping is not None for policy in policies.values())
        self._view = (tuple(policies.values()), grouping)


def _parse(item: dict[str, Any]) -> Policy | None:
    name = item.get("metadata", {}).get("name", "")
    try:
        return Policy(name, ResponsePolicySpec.model_validate(item.get("spec") or {}))
    except pydantic.ValidationError as error:
        log.warning(
            "ignoring an invalid ResponsePolicy", extra={"policy": name, "error": str(error)[:300]}
        )
        return None

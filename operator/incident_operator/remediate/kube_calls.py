"""What the Kubernetes actions share: one call to the API server, its failures
sorted the way the executor needs them (as ecs.py does for AWS)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import urllib3
from kubernetes import client

from . import NothingDone, OutcomeUnknown, RemediationFailed

_T = TypeVar("_T")


async def call(
    kube: client.ApiClient | None,
    what: str,
    request: Callable[[client.ApiClient], _T],
    *,
    rights: str,
) -> _T:
    """`request(kube)` in a thread. `what` names the call for messages ("restart
    Deployment shop/web"); `rights` is the RBAC it needs ("get and patch on
    deployments"), said when it is refused.

    Forbidden or not found: NothingDone (certainly nothing was done). A
    conflict, throttling, a 5xx or no answer: OutcomeUnknown (look again
    later). Anything else: RemediationFailed.
    """
    if kube is None:
        raise NothingDone(f"{what}: this operator has no Kubernetes client")
    try:
        return await asyncio.to_thread(request, kube)
    except client.ApiException as error:
        if error.status in (401, 403):
            raise NothingDone(
                f"{what}: forbidden ({error.status}); the operator's RBAC needs {rights} "
                "in this namespace (chart: remediation.kubernetes)"
            ) from error
        if error.status == 404:
            raise NothingDone(f"{what}: not found") from error
        if error.status in (409, 429) or (error.status or 0) >= 500:
            raise OutcomeUnknown(
                f"{what}: {error.status} {error.reason} (will try again)"
            ) from error
        raise RemediationFailed(f"{what}: {error.status} {error.reason}") from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise OutcomeUnknown(f"{what}: {error} (will try again)") from error

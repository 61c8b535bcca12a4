"""Time every AWS call the operator makes: `timed(boto3.client(...))`.

Where each client is made (timeline, claims, ECS actions, evidence, email
and delivery records), it is handed to `timed`, which hooks botocore's
per-call events into `incident_operator_aws_call_seconds`. `before-call`
fires once per API call, before the first attempt; `after-call` (an
answer, an error answer included) and `after-call-error` (no answer:
a timeout, a dropped connection) fire once after the last, so boto3's
retries and their backoff are inside the time observed: it is how long the
operator waited on AWS, not how long one attempt took.

Apart from aws.py, which remediate/ imports and which metrics.py would
import back through remediate/.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

from .metrics import AWS_CALL_SECONDS

C = TypeVar("C")

# Where the start of a call waits for its end: botocore's per-call context dict.
_STARTED = "incident_operator_started"


def timed(client: C) -> C:
    """The same client, its calls observed in `incident_operator_aws_call_seconds`."""
    meta: Any = getattr(client, "meta")  # noqa: B009 - mypy_boto3 clients all have it
    service = meta.service_model.service_name  # as boto3.client() was asked: ecs, logs, ...
    events = meta.events

    def started(context: dict[str, Any], **_: Any) -> None:
        context[_STARTED] = time.perf_counter()

    def ended(context: dict[str, Any], event_name: str, **_: Any) -> None:
        began = context.pop(_STARTED, None)
        if began is not None:
            operation = event_name.rsplit(".", 1)[-1]  # after-call.<service-id>.<Operation>
            AWS_CALL_SECONDS.labels(service, operation).observe(time.perf_counter() - began)

    # unique_id: a client timed twice is observed once.
    events.register("before-call", started, unique_id=f"{_STARTED}-before")
    events.register("after-call", ended, unique_id=f"{_STARTED}-after")
    events.register("after-call-error", ended, unique_id=f"{_STARTED}-error")
    return client

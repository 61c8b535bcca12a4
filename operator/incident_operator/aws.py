"""What every AWS caller here shares: client settings, what a failure means,
and DynamoDB attribute values.

Utilities apart from the domain, as kopf keeps its `_cogs`: remediate/,
notify/ and timeline/ use them, and they know nothing of Incidents.
"""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.retries.standard import (  # type: ignore[attr-defined]  # stubs lack one
    RetryContext,
    ThrottledRetryableChecker,
    ThrottlingStatusCodeChecker,
    TransientRetryableChecker,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

# boto3's own retries (throttling, 5xx, dropped connections) with jittered
# backoff; we add none of our own on top. No call of ours takes seconds, so
# a short read timeout (botocore's default is 60 s) turns a hung connection
# into a retry instead of a stalled Incident.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 5}, connect_timeout=5, read_timeout=10
)

# botocore's own classification, the one its standard retry mode uses.
_TRANSIENT_CHECKS = (
    TransientRetryableChecker(),
    ThrottledRetryableChecker(),
    ThrottlingStatusCodeChecker(),
)


def transient(error: ClientError | BotoCoreError) -> bool:
    """Whether an AWS failure may pass by itself: throttling, a 5xx, no answer.

    Asked after boto3's own retries gave up, or for a call made without
    them: such a failure means "not now", not "no".
    """
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        context = RetryContext(
            attempt_number=1,
            parsed_response=cast(dict[str, Any], error.response),
            http_response=SimpleNamespace(status_code=status) if status else None,
        )
    else:
        context = RetryContext(attempt_number=1, caught_exception=error)
    return any(check.is_retryable(context) for check in _TRANSIENT_CHECKS)


def error_code(error: ClientError) -> str:
    """The AWS error code of a refused call (`ConditionalCheckFailedException`...)."""
    return error.response.get("Error", {}).get("Code", "")


def explain(error: ClientError | BotoCoreError, *, doing: str) -> str:
    """One line an on-call engineer can act on."""
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code = details.get("Code", "Unknown")
        message = details.get("Message", "")
        hint = _HINTS.get(code, "")
        if code == "TransactionCanceledException":
            reasons = [r.get("Code", "?") for r in error.response.get("CancellationReasons", [])]
            message = f"{message} (reasons: {', '.join(reasons)})"
        return f"Could not {doing}: {code}: {message}{hint}"
    return f"Could not {doing}: {type(error).__name__}: {error}"


_HINTS = {
    "AccessDeniedException": " (check the operator's IAM role)",
    "AccessDenied": " (check the operator's IAM role)",
    "UnrecognizedClientException": " (check the operator's AWS credentials)",
    "ThrottlingException": " (throttled)",
    "ProvisionedThroughputExceededException": " (throttled)",
    "ResourceNotFoundException": " (does the table exist in this region?)",
    "ClusterNotFoundException": " (check spec.service.cluster or ECS_CLUSTER_NAME)",
    "ServiceNotFoundException": " (check spec.service.name and its cluster)",
}


# --- DynamoDB attribute values ------------------------------------------------

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def attribute(value: Any) -> AttributeValueTypeDef:
    """A DynamoDB attribute value (boto3's own encoding). A float keeps
    milliseconds, so that the number stored and the one compared against it
    later are equal; nested numbers must be Decimals already."""
    if isinstance(value, float):
        value = Decimal(f"{value:.3f}")
    return _serializer.serialize(value)


def plain(item: dict[str, Any]) -> dict[str, Any]:
    """An item as Python values; numbers come back as int or float."""
    return {name: _number(_deserializer.deserialize(value)) for name, value in item.items()}


def _number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _number(inner) for key, inner in value.items()}
    if isinstance(value, list | set):
        return [_number(inner) for inner in value]
    return value

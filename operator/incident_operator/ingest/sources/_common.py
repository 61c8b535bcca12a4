"""What every alarm source needs: a permissive payload base, and fitting text to bounds.

The Incident's fields are bounded (see `models.py`): text that does not fit is
cut to size here, marked with an ellipsis, because a too-long description is no
reason to lose an alarm. Identifiers (service, cluster, region) are the
exception: they are never cut, since a cut name could be another service's;
one too long for its field refuses the alarm (`identifier`).

Names and identifiers lose the characters that make text read as something it
is not (control, format and bidi characters: `text.visible`); free text keeps
them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from ...models import MAX_IDENTIFIER, MAX_NAME, MAX_RAW_ALARM
from ...text import visible
from ..alarm import InvalidAlarm

MAX_DIMENSIONS = 32  # Alarm.dimensions
MAX_LABELS = 64  # IncidentSpec.labels
MAX_FINGERPRINT = 1024  # ReceivedAlarm.fingerprint
MAX_DELIVERY_ID = 256  # ReceivedAlarm.delivery_id
MAX_REGION = 32  # ServiceRef.region
MAX_ARN = 2048  # Alarm.arn

ELLIPSIS = "…"

P = TypeVar("P", bound=BaseModel)


class Payload(BaseModel):
    """Base of the request-body models.

    Unknown fields are kept, not refused: AWS and Alertmanager add fields over
    time, and a sender should not break on an upgrade. The fields a parser needs
    are declared and validated. Kept extras also end up in `Alarm.raw`.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)


def expect(payload: BaseModel, model: type[P]) -> P:
    """The payload as the model a source declared; anything else is a wiring bug."""
    if not isinstance(payload, model):
        raise TypeError(f"expected a {model.__name__}, got a {type(payload).__name__}")
    return payload


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(ELLIPSIS)] + ELLIPSIS


def clip_optional(text: str | None, limit: int) -> str | None:
    """Like `clip`, but blank or missing text is None (so it is left out of the API object)."""
    if text is None or not text.strip():
        return None
    return clip(text, limit)


def identifier(text: str, *, what: str, limit: int = MAX_IDENTIFIER) -> str:
    """A service, cluster or region as received, only without hidden characters.

    Never cut: one that does not fit refuses the alarm (InvalidAlarm, 422),
    because two long names cut to one would make two services one.
    """
    cleaned = visible(text).strip()
    if len(cleaned) > limit:
        raise InvalidAlarm(
            f"the {what} is {len(cleaned)} characters long, over the limit of {limit}; "
            "it is refused rather than cut, since a cut name could name another service"
        )
    return cleaned


def optional_identifier(text: str | None, *, what: str, limit: int = MAX_IDENTIFIER) -> str | None:
    """Like `identifier`, but blank or missing is None."""
    if text is None:
        return None
    return identifier(text, what=what, limit=limit) or None


def name(text: str) -> str:
    """A name shown to people (an alarm's, a title): visible, cut to fit."""
    return clip(visible(text), MAX_NAME)


def first(*values: str | None) -> str | None:
    """The first value that is not blank, stripped."""
    for value in values:
        if value is not None and value.strip():
            return value.strip()
    return None


def bounded(mapping: Mapping[str, object], *, max_items: int) -> dict[str, str]:
    """A string-to-string copy that fits the API: at most `max_items` entries, short texts.

    Entries keep their order, so the first ones win when there are too many. Missing
    values are dropped; non-string values become their JSON text.
    """
    result: dict[str, str] = {}
    for key, value in mapping.items():
        if len(result) >= max_items:
            break
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        result[clip(visible(str(key)), MAX_NAME)] = clip(visible(text), MAX_NAME)
    return result


def raw_json(payload: BaseModel) -> str:
    """The received payload as compact JSON text, cut to the size `Alarm.raw` allows.

    `exclude_unset` leaves out the defaults the model filled in, so the text shows
    what the sender sent (extras included), not what the model assumed.
    """
    # pydantic's own serialiser: compact, UTF-8 as sent (not \u-escaped).
    return clip(payload.model_dump_json(by_alias=True, exclude_unset=True), MAX_RAW_ALARM)


def stable_hash(*parts: str) -> str:
    """A short, stable hex digest of the parts (NUL-separated, so ("ab", "c") != ("a", "bc"))."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def fit_fingerprint(value: str) -> str:
    """A fingerprint that fits its bound: a too-long one is hashed, never cut.

    Cutting could make two different alarms share a fingerprint (and so one
    Incident); a hash of the whole value cannot, in practice.
    """
    if len(value) <= MAX_FINGERPRINT:
        return value
    return f"sha256:{hashlib.sha256(value.encode()).hexdigest()}"


def no_service(what: str, expected: str) -> InvalidAlarm:
    """The error for an alarm that names no service, telling the sender how to name one."""
    return InvalidAlarm(f"{what} has no service name: expected {expected}")

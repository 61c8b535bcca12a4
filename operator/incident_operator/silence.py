"""Silences: which alarms a `Silence` mutes, and when. Pure: the clock is an argument.

A Silence lives in the namespace of the Incidents it mutes (the operator's
namespace, as they do): `kubectl get silences` next to `kubectl get
incidents`, and the right to silence is a Role in that namespace, not a
cluster-wide grant.

Matchers are Alertmanager's: `name op value` with `=`, `!=`, `=~`, `!~`;
regular expressions are anchored at both ends, as Alertmanager anchors
them. A name is one of the alarm's attributes (`service`, `cluster`,
`severity`, `source`, `alarm`) or else one of its labels; a label the alarm
does not have reads as the empty string. Every matcher must hold.

When: from `startsAt` (its creation if unset) to `endsAt`; with a weekly
`recurrence`, only in its windows (on these days, from this local time, for
this long, in this time zone) between the two.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, JsonValue, field_validator, model_validator

from .models import (
    VISIBLE,
    Duration,
    IncidentSpec,
    Model,
    Name,
    ShortText,
    Text,
    parse_duration,
)

Op = Literal["=", "!=", "=~", "!~"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[Weekday, ...] = (
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday",
)  # fmt: skip
State = Literal["pending", "active", "expired"]
ATTRIBUTES = ("service", "cluster", "severity", "source", "alarm")
MAX_WINDOW = timedelta(days=7)

# A regex the API server (RE2) cannot compile makes `matches` fail, and a
# rule that fails refuses the object: `x || !x` keeps the failure instead of
# letting a `true` on either side hide it. The models check Python's `re`.
_REGEX_COMPILES: list[JsonValue] = [
    {
        "rule": "!(self.op in ['=~', '!~']) || ''.matches(self.value) || !''.matches(self.value)",
        "message": "value must be a valid regular expression for =~ and !~",
    }
]


class Matcher(Model):
    """One condition on an alarm, as Alertmanager writes them: `service=payments`."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _REGEX_COMPILES})

    name: Annotated[str, Field(min_length=1, max_length=256, pattern=VISIBLE)] = Field(
        description="service, cluster, severity, source, alarm (the alarm's name), "
        "or the name of one of the alarm's labels."
    )
    op: Op = Field("=", description="=, !=, =~ (regex, anchored), !~ (regex, anchored).")
    value: Name = Field(description="A value, or a regular expression for =~ and !~.")

    @model_validator(mode="after")
    def regex_compiles(self) -> Matcher:
        if self.op in ("=~", "!~"):
            try:
                _regex(self.value)
            except re.error as error:
                raise ValueError(
                    f"{self.name}{self.op}{self.value!r}: bad regex: {error}"
                ) from None
        return self

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"

    def holds(self, alarm: IncidentSpec) -> bool:
        # Imported here: policy.py builds its default policy at import, which
        # needs the CRD schema, which needs this module.
        from .policy import attribute

        value = attribute(alarm, self.name)
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        found = _regex(self.value).fullmatch(value) is not None
        return found if self.op == "=~" else not found


class Recurrence(Model):
    """A weekly maintenance window: on `days`, from `start` for `duration`, in `timeZone`."""

    days: list[Weekday] = Field(min_length=1, max_length=7, description="e.g. [tuesday].")
    start: Annotated[str, Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")] = Field(
        description="Local time the window opens, HH:MM."
    )
    duration: Duration = Field(description="How long it stays open: 2h, 90m, 1h30m; at most 168h.")
    time_zone: Annotated[str, Field(min_length=1, max_length=64, pattern=VISIBLE)] = Field(
        "UTC", description="An IANA time zone (Europe/Paris); UTC if unset."
    )

    @field_validator("time_zone")
    @classmethod
    def known_zone(cls, value: str) -> str:
        _zone(value)
        return value

    @field_validator("duration")
    @classmethod
    def bounded(cls, value: str) -> str:
        length = parse_duration(value)
        if not timedelta(0) < length <= MAX_WINDOW:
            raise ValueError(f"duration {value} must be more than 0 and at most 168h")
        return value

    @property
    def length(self) -> timedelta:
        return parse_duration(self.duration)


_SPEC_VALIDATIONS: list[JsonValue] = [
    {
        "rule": "has(self.endsAt) || has(self.recurrence)",
        "message": "a silence needs endsAt, or a recurrence (a maintenance window)",
    },
    {
        "rule": "!has(self.endsAt) || !has(self.startsAt) || self.endsAt > self.startsAt",
        "message": "endsAt must be after startsAt",
    },
]


class SilenceSpec(Model):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _SPEC_VALIDATIONS})

    matchers: list[Matcher] = Field(
        min_length=1, max_length=32, description="Every matcher must hold for an alarm."
    )
    starts_at: datetime | None = Field(None, description="From when; its creation if unset.")
    ends_at: datetime | None = Field(
        None, description="Until when; required unless there is a recurrence."
    )
    recurrence: Recurrence | None = Field(
        None, description="Mute only in these weekly windows (between startsAt and endsAt)."
    )
    created_by: ShortText | None = Field(
        None, description="Who made it (Slack user, kubectl user)."
    )
    comment: Text = Field("", description="Why: a deployment, a maintenance, a known issue.")

    @model_validator(mode="after")
    def bounded(self) -> SilenceSpec:
        if self.ends_at is None and self.recurrence is None:
            raise ValueError("a silence needs endsAt, or a recurrence (a maintenance window)")
        if self.ends_at and self.starts_at and self.ends_at <= self.starts_at:
            raise ValueError("endsAt must be after startsAt")
        return self


class SilenceStatus(Model):
    """Kept by the operator: what `kubectl get silences` shows."""

    state: State | None = Field(None, description="pending, active or expired, as of now.")
    matchers: Annotated[str, Field(max_length=4096)] | None = Field(
        None, description="The matchers in one line."
    )
    starts_at: datetime | None = Field(None, description="Start of the current or next window.")
    ends_at: datetime | None = Field(None, description="End of the current or next window.")
    muted: Annotated[int, Field(ge=0)] = Field(0, description="Alarms it muted.")


class Silence(Model):
    """Mutes matching alarms for a while: recorded, not assessed, acted on or announced."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["incident-response.dev/v1alpha1"] = "incident-response.dev/v1alpha1"
    kind: Literal["Silence"] = "Silence"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: SilenceSpec
    status: SilenceStatus = Field(default_factory=SilenceStatus)

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def created(self) -> datetime | None:
        stamp = self.metadata.get("creationTimestamp")
        if isinstance(stamp, datetime):
            return stamp
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None


# --- matching ------------------------------------------------------------


def matches(spec: SilenceSpec, alarm: IncidentSpec) -> bool:
    return all(matcher.holds(alarm) for matcher in spec.matchers)


def describe(spec: SilenceSpec) -> str:
    """The matchers in one line: `service=payments,alarm=~High.*`."""
    return ",".join(str(matcher) for matcher in spec.matchers)


# Regex metacharacters a glob's literal text escapes (kubectl-incident
# escapes the same ones).
_METACHARACTERS = frozenset(".^$+(){}[]|\\")


def glob_regex(glob: str) -> str:
    """A shell glob (`*`, `?`) as the regex a `=~` matcher takes: `payments-*` ->
    `payments-.*`; everything else is literal."""
    return "".join(
        ".*" if c == "*" else "." if c == "?" else "\\" + c if c in _METACHARACTERS else c
        for c in glob
    )


# --- when ----------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A span of time in which a silence mutes: [start, end)."""

    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True)
class Muting:
    """Which silence mutes an alarm now, and until when."""

    name: str
    until: datetime


def windows(silence: Silence, *, after: datetime) -> Iterable[Window]:
    """The silence's windows that end after `after`, in order (clipped to
    startsAt/endsAt): one for a one-off, a week's worth at a time for a
    recurrence, until endsAt."""
    spec = silence.spec
    first = spec.starts_at or silence.created or after
    last = spec.ends_at
    if spec.recurrence is None:
        if last is not None and last > after and last > first:
            yield Window(first, last)
        return
    day = after.astimezone(_zone(spec.recurrence.time_zone)).date() - MAX_WINDOW - timedelta(1)
    while last is None or _open_at(spec.recurrence, day) < last:
        if day.weekday() in _days(spec.recurrence):
            opens = _open_at(spec.recurrence, day)
            window = Window(max(opens, first), opens + spec.recurrence.length)
            if last is not None:
                window = Window(window.start, min(window.end, last))
            if window.end > after and window.end > window.start:
                yield window
        day += timedelta(1)
        if day > after.date() + timedelta(days=3660):
            return  # a recurrence that never opens again within ten years


def current(silence: Silence, now: datetime) -> Window | None:
    """The window it mutes in now; None if it is not in force now."""
    for window in windows(silence, after=now):
        return window if now in window else None
    return None


def state(silence: Silence, now: datetime) -> tuple[State, Window | None]:
    """pending (a window ahead), active (in one), or expired (none left); and
    the current or next window."""
    for window in windows(silence, after=now):
        return ("active" if now in window else "pending"), window
    return "expired", None


def expired_at(silence: Silence) -> datetime | None:
    """When it stopped muting for good: its endsAt (None: it never expires)."""
    return silence.spec.ends_at


def muting(silences: Iterable[Silence], alarm: IncidentSpec, now: datetime) -> Muting | None:
    """The silence in force now that matches the alarm, the one that mutes it
    longest; None if none does."""
    best: Muting | None = None
    for silence in silences:
        if not matches(silence.spec, alarm):
            continue
        window = current(silence, now)
        if window is not None and (best is None or window.end > best.until):
            best = Muting(silence.name, window.end)
    return best


def _open_at(recurrence: Recurrence, day: date) -> datetime:
    """When the window of this local day opens, in UTC."""
    hour, minute = (int(part) for part in recurrence.start.split(":"))
    local = datetime.combine(day, time(hour, minute), tzinfo=_zone(recurrence.time_zone))
    return local.astimezone(UTC)


def _days(recurrence: Recurrence) -> frozenset[int]:
    return frozenset(WEEKDAYS.index(day) for day in recurrence.days)


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {name!r}") from error


@lru_cache(maxsize=256)
def _regex(value: str) -> re.Pattern[str]:
    return re.compile(value)

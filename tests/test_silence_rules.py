"""Silences without servers: which alarms a Silence matches, when it is in force
(one-off and weekly windows, across their boundaries on a clock we set), and
what the phase machine does with a silenced alarm."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from builders import incident as incident_body
from incident_operator.models import Incident, IncidentSpec
from incident_operator.policy import DEFAULT
from incident_operator.reconcile.phases import Transition, Wait, decide
from incident_operator.silence import (
    Matcher,
    Silence,
    SilenceSpec,
    current,
    glob_regex,
    matches,
    muting,
    parse_duration,
    state,
)

# A Monday.
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def alarm(**spec: Any) -> IncidentSpec:
    body = incident_body("checkout-abc", **spec)
    body["spec"]["labels"] = {"env": "prod", "team": "payments"}
    return IncidentSpec.model_validate(body["spec"])


def silence(name: str = "deploy", *matchers: str, **spec: Any) -> Silence:
    parsed = [_matcher(m) for m in matchers or ("service=checkout",)]
    spec.setdefault("endsAt", (NOW + timedelta(hours=1)).isoformat())
    return Silence.model_validate(
        {
            "metadata": {"name": name, "creationTimestamp": (NOW - timedelta(hours=1)).isoformat()},
            "spec": {"matchers": parsed, **spec},
        }
    )


def _matcher(text: str) -> dict[str, str]:
    for op in ("!~", "=~", "!=", "="):
        if op in text:
            name, value = text.split(op, 1)
            return {"name": name, "op": op, "value": value}
    raise AssertionError(text)


# --- matching -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("matchers", "expected"),
    [
        (["service=checkout"], True),
        (["service=payments"], False),
        (["service!=payments"], True),
        (["cluster=prod", "severity=high", "source=cloudwatch"], True),
        (["alarm=~checkout-.*"], True),
        (["alarm=~cpu"], False),  # anchored, as in Alertmanager
        (["alarm!~checkout-.*"], False),
        (["env=prod"], True),  # a label
        (["team=~pay.*", "env!=staging"], True),
        (["missing="], True),  # a label it lacks reads as ""
        (["missing=x"], False),
        (["service=checkout", "severity=critical"], False),  # every matcher must hold
    ],
)
def test_matchers(matchers: list[str], expected: bool) -> None:
    assert matches(silence("s", *matchers).spec, alarm()) is expected


def test_a_glob_becomes_an_anchored_regex() -> None:
    regex = glob_regex("checkout-cpu-*")
    assert regex == "checkout-cpu-.*"
    assert glob_regex("a.b?(c)") == r"a\.b.\(c\)"
    assert Matcher(name="alarm", op="=~", value=regex).holds(alarm())
    assert not Matcher(name="alarm", op="=~", value=glob_regex("cpu-*")).holds(alarm())


@pytest.mark.parametrize(
    "spec",
    [
        {"matchers": [{"name": "alarm", "op": "=~", "value": "(unclosed"}], "endsAt": NOW},
        {"matchers": [], "endsAt": NOW},  # would silence everything
        {"matchers": [{"name": "service", "value": "x"}]},  # no end, no recurrence
        {"matchers": [{"name": "service", "value": "x"}], "startsAt": NOW, "endsAt": NOW},
        {
            "matchers": [{"name": "service", "value": "x"}],
            "recurrence": {
                "days": ["monday"],
                "start": "22:00",
                "duration": "2h",
                "timeZone": "Mars/Olympus",
            },
        },
        {
            "matchers": [{"name": "service", "value": "x"}],
            "recurrence": {"days": ["monday"], "start": "22:00", "duration": "200h"},
        },
    ],
)
def test_bad_silences_are_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        SilenceSpec.model_validate(spec)


def test_durations() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("45m") == timedelta(minutes=45)
    assert parse_duration("90s") == timedelta(seconds=90)  # one format for every duration
    for wrong in ("soon", "0m", "5", "m", ""):
        with pytest.raises(ValueError):
            parse_duration(wrong)


# --- when -----------------------------------------------------------------


def test_a_one_off_silence_is_pending_then_active_then_expired() -> None:
    one_off = silence(startsAt=(NOW + timedelta(minutes=10)).isoformat())
    assert state(one_off, NOW)[0] == "pending"
    assert current(one_off, NOW) is None
    assert state(one_off, NOW + timedelta(minutes=10))[0] == "active"
    window = current(one_off, NOW + timedelta(minutes=59, seconds=59))
    assert window is not None and window.end == NOW + timedelta(hours=1)
    assert state(one_off, NOW + timedelta(hours=1)) == ("expired", None)


def test_without_startsat_it_is_in_force_from_its_creation() -> None:
    assert state(silence(), NOW)[0] == "active"


def weekly(**recurrence: Any) -> Silence:
    return Silence.model_validate(
        {
            "metadata": {"name": "maintenance", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"matchers": [{"name": "service", "value": "checkout"}],
                     "recurrence": recurrence},
        }
    )  # fmt: skip


def test_a_weekly_window_across_its_boundaries() -> None:
    # Tuesdays 22:00-00:30 in Paris (UTC+1 in winter): 21:00-23:30 UTC.
    window = weekly(days=["tuesday"], start="22:00", duration="2h30m", timeZone="Europe/Paris")
    tuesday = datetime(2026, 12, 1, tzinfo=UTC)
    before = tuesday.replace(hour=20, minute=59, second=59)
    opens, closes = tuesday.replace(hour=21), tuesday.replace(hour=23, minute=30)
    assert state(window, before) == ("pending", state(window, opens)[1])
    assert current(window, before) is None
    assert current(window, opens) is not None
    inside = current(window, closes - timedelta(seconds=1))
    assert inside is not None and (inside.start, inside.end) == (opens, closes)
    assert current(window, closes) is None
    # Then pending until next Tuesday's window.
    pending, upcoming = state(window, closes)
    assert pending == "pending" and upcoming is not None
    assert upcoming.start == opens + timedelta(days=7)


def test_a_weekly_window_follows_its_time_zone_across_dst() -> None:
    window = weekly(days=["sunday"], start="02:00", duration="1h", timeZone="America/New_York")
    winter = current(window, datetime(2026, 12, 6, 7, 30, tzinfo=UTC))  # 02:30 EST
    summer = current(window, datetime(2026, 7, 5, 6, 30, tzinfo=UTC))  # 02:30 EDT
    assert winter is not None and winter.start.hour == 7
    assert summer is not None and summer.start.hour == 6


def test_a_window_past_midnight_is_in_force_the_next_day() -> None:
    window = weekly(days=["sunday"], start="23:00", duration="3h")
    assert current(window, datetime(2026, 12, 7, 1, 0, tzinfo=UTC)) is not None  # Monday 01:00
    assert current(window, datetime(2026, 12, 7, 2, 0, tzinfo=UTC)) is None


def test_a_recurrence_ends_at_endsat() -> None:
    window = weekly(days=["monday"], start="11:00", duration="2h")
    bounded = window.model_copy(
        update={"spec": window.spec.model_copy(update={"ends_at": NOW + timedelta(minutes=30)})}
    )
    inside = current(bounded, NOW)
    assert inside is not None and inside.end == NOW + timedelta(minutes=30)
    assert state(bounded, NOW + timedelta(minutes=30)) == ("expired", None)


def test_the_longest_silence_in_force_mutes() -> None:
    short = silence("short")
    long = silence("long", endsAt=(NOW + timedelta(hours=3)).isoformat())
    other = silence("other", "service=payments", endsAt=(NOW + timedelta(hours=9)).isoformat())
    muted = muting([short, long, other], alarm(), NOW)
    assert muted is not None and (muted.name, muted.until) == ("long", NOW + timedelta(hours=3))
    assert muting([other], alarm(), NOW) is None


# --- the phase machine ------------------------------------------------------


def make(phase: str | None = None, **status: Any) -> Incident:
    body = incident_body("checkout-abc")
    body["metadata"].update({"namespace": "prod", "uid": "u-1", "resourceVersion": "1"})
    body["status"] = {"occurrences": 1, "alarmState": "ALARM", **status}
    if phase:
        body["status"]["phase"] = phase
    return Incident.model_validate(body)


def transition(outcome: object) -> Transition:
    assert isinstance(outcome, Transition), outcome
    return outcome


def conditions(outcome: Transition) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in outcome.conditions}


def test_a_silenced_alarm_is_recorded_and_told_to_no_one() -> None:
    deploy = silence(comment="deploying checkout")
    outcome = transition(decide(make(), policy=DEFAULT, now=NOW, silences=[deploy]))
    assert outcome.phase == "Silenced"
    assert outcome.quiet, "no notification"
    assert outcome.wake_after == 3600  # looked at again when the silence ends
    assert outcome.status["silence"]["name"] == "deploy"
    assert conditions(outcome)["Silenced"] == ("True", "Silenced")
    assert [r.kind for r in outcome.records] == ["received", "silenced"]
    assert "silence deploy" in outcome.records[1].message
    assert "deploying checkout" in outcome.records[1].message
    assert "assessment" not in outcome.status


def test_a_silence_not_in_force_or_not_matching_mutes_nothing() -> None:
    later = silence(startsAt=(NOW + timedelta(minutes=5)).isoformat())
    other = silence("other", "service=payments")
    outcome = transition(decide(make(), policy=DEFAULT, now=NOW, silences=[later, other]))
    assert outcome.phase == "Assessing"


def silenced(until: datetime, name: str = "deploy") -> Incident:
    return make("Silenced", silence={"name": name, "until": until.isoformat()})


def test_a_silenced_alarm_waits_for_the_end_of_its_silence() -> None:
    end = NOW + timedelta(hours=1)
    outcome = decide(silenced(end), policy=DEFAULT, now=NOW, silences=[silence()])
    assert outcome == Wait(3600)


def test_at_the_end_of_a_one_off_silence_a_firing_alarm_triggers_and_is_told() -> None:
    end = NOW + timedelta(hours=1)
    outcome = transition(decide(silenced(end), policy=DEFAULT, now=end, silences=[silence()]))
    assert outcome.phase == "Triggered"
    assert not outcome.quiet, "the team is told at the silence's end"
    assert conditions(outcome)["Silenced"] == ("False", "SilenceEnded")
    [record] = outcome.records
    assert (record.kind, record.reason) == ("silence_ended", "SilenceEnded")
    assert "ended at" in record.message and "still fires" in record.message
    # And on from Triggered, without a second "received".
    then = make("Triggered", silence={"name": "deploy", "until": end.isoformat()})
    assessing = transition(decide(then, policy=DEFAULT, now=end, silences=[silence()]))
    assert assessing.phase == "Assessing" and assessing.records == []


def test_a_deleted_silence_ends_the_muting_at_once() -> None:
    outcome = transition(
        decide(silenced(NOW + timedelta(hours=1)), policy=DEFAULT, now=NOW, silences=[])
    )
    assert outcome.phase == "Triggered"
    assert "was deleted" in outcome.records[0].message


def test_a_recurring_window_mutes_then_ends_on_the_clock() -> None:
    window = weekly(days=["monday"], start="11:30", duration="1h")
    muted = transition(decide(make(), policy=DEFAULT, now=NOW, silences=[window]))
    assert muted.phase == "Silenced"
    end = NOW + timedelta(minutes=30)
    assert muted.wake_after == 1800
    incident = silenced(end, name="maintenance")
    assert decide(incident, policy=DEFAULT, now=end - timedelta(seconds=1), silences=[window]) == (
        Wait(1)
    )
    ended = transition(decide(incident, policy=DEFAULT, now=end, silences=[window]))
    assert ended.phase == "Triggered"
    # A week later the same window mutes the next alarm.
    next_week = NOW + timedelta(days=7)
    assert transition(decide(make(), policy=DEFAULT, now=next_week, silences=[window])).quiet


def test_another_silence_in_force_keeps_it_muted() -> None:
    longer = silence("longer", endsAt=(NOW + timedelta(hours=5)).isoformat())
    outcome = transition(
        decide(silenced(NOW, name="deploy"), policy=DEFAULT, now=NOW, silences=[longer])
    )
    assert outcome.phase == "Silenced" and outcome.quiet
    assert outcome.status["silence"]["name"] == "longer"


def test_recovery_during_a_silence_resolves_quietly() -> None:
    muted = {"name": "deploy", "until": NOW.isoformat()}
    incident = make("Silenced", alarmState="OK", silence=muted)
    outcome = transition(decide(incident, policy=DEFAULT, now=NOW, silences=[silence()]))
    assert outcome.phase == "Resolved"
    assert outcome.quiet
    assert conditions(outcome)["Resolved"] == ("True", "AlarmRecovered")
    assert conditions(outcome)["Silenced"] == ("False", "AlarmRecovered")
    assert "quietly" in outcome.records[0].message


def test_an_acknowledgement_of_a_silenced_alarm_is_recorded_quietly() -> None:
    muted = {"name": "deploy", "until": (NOW + timedelta(hours=1)).isoformat()}
    ack = {"by": "alice", "via": "kubectl", "at": NOW.isoformat()}
    incident = make("Silenced", silence=muted, acknowledgement=ack)
    outcome = transition(decide(incident, policy=DEFAULT, now=NOW, silences=[silence()]))
    assert (outcome.phase, outcome.quiet, outcome.wake_after) == ("Silenced", True, 3600)
    assert [r.kind for r in outcome.records] == ["acknowledged"]

"""Severity normalization: label words and markers in free text, to one scale."""

from __future__ import annotations

import pytest

from incident_operator.ingest import severity


def test_the_default_is_medium() -> None:
    assert severity.DEFAULT == "medium"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("critical", "critical"),
        ("CRITICAL", "critical"),
        (" Critical ", "critical"),
        ("page", "critical"),
        ("fatal", "critical"),
        ("high", "high"),
        ("error", "high"),
        ("major", "high"),
        ("warning", "medium"),
        ("warn", "medium"),
        ("medium", "medium"),
        ("low", "low"),
        ("minor", "low"),
        ("info", "info"),
        ("none", "info"),
        ("P1", "critical"),
        ("p2", "high"),
        ("sev1", "critical"),
        ("SEV-3", "medium"),
        ("sev_4", "low"),
        ("severity5", "info"),
        ("4", "low"),
        ("0", "critical"),
    ],
)
def test_label_words_map_to_the_scale(word: str, expected: str) -> None:
    assert severity.parse(word) == expected
    assert severity.normalize(word) == expected


@pytest.mark.parametrize("word", [None, "", "  ", "bogus", "p9", "sev7", "highest"])
def test_unknown_words_are_none_and_normalize_to_the_default(word: str | None) -> None:
    assert severity.parse(word) is None
    assert severity.normalize(word) == "medium"
    assert severity.normalize(word, default="low") == "low"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("checkout cpu severity=high", "high"),
        ("checkout cpu (Severity: Low)", "low"),
        ('severity="critical" checkout', "critical"),
        ("checkout-sev1-latency", "critical"),
        ("checkout_sev2_latency", "high"),
        ("CheckoutSev4Errors", "low"),
        ("[P1] checkout is down", "critical"),
        ("checkout-p3-latency", "medium"),
        ("CheckoutP2Errors", "high"),
        ("CRITICAL checkout cpu", "critical"),
        ("CheckoutCriticalErrors", "critical"),
        ("checkout_crit_errors", "critical"),
        ("checkout-warning-latency", "medium"),
        ("checkout WARN", "medium"),
    ],
)
def test_markers_in_alarm_names_and_descriptions(text: str, expected: str) -> None:
    assert severity.from_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "checkout cpu high",  # "high" is the metric's state, not a severity marker
        "noncritical-batch-job",
        "p3.2xlarge GPU memory",  # an instance type
        "p99 latency above 2s",
        "HTTP2 stream errors",
        "Low disk space",
        "",
    ],
)
def test_text_without_markers_gets_the_default(text: str) -> None:
    assert severity.from_text(text) == "medium"
    assert severity.from_text(text, default="info") == "info"


def test_the_most_explicit_marker_wins_across_texts() -> None:
    # An explicit severity= in the description beats a word in the name...
    assert severity.from_text("checkout-critical", "severity=info") == "info"
    # ...sevN beats PN, PN beats bare words.
    assert severity.from_text("P4 checkout", "sev2") == "high"
    assert severity.from_text("checkout critical", "P3") == "medium"
    # An unknown explicit word does not stop the search.
    assert severity.from_text("severity=whatever sev1") == "critical"


def test_no_texts_give_the_default() -> None:
    assert severity.from_text() == "medium"
    assert severity.from_text(None, None) == "medium"

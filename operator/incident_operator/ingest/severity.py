"""Severity: one small scale for every source.

Sources speak many dialects ("page", "warning", "P2", "sev1", "error"); policies and
`kubectl get incidents` speak one: critical, high, medium, low, info. What cannot be
read becomes `DEFAULT`, which is `medium`: loud enough to be looked at, not so loud
that a mislabelled alarm pages someone at night.
"""

from __future__ import annotations

import re

from ..models import Severity

DEFAULT: Severity = "medium"

_WORDS: dict[str, Severity] = {
    "critical": "critical",
    "crit": "critical",
    "fatal": "critical",
    "emergency": "critical",
    "emerg": "critical",
    "alert": "critical",
    "page": "critical",
    "disaster": "critical",
    "high": "high",
    "error": "high",
    "err": "high",
    "major": "high",
    "severe": "high",
    "medium": "medium",
    "moderate": "medium",
    "average": "medium",
    "warning": "medium",
    "warn": "medium",
    "low": "low",
    "minor": "low",
    "notice": "low",
    "info": "info",
    "informational": "info",
    "information": "info",
    "none": "info",
    "debug": "info",
}

# SEV1..SEV5 and P1..P5 share one scale (Opsgenie, PagerDuty, most incident
# processes): 1 is the worst. 0 exists in some shops and is worse still.
_RANKS: dict[str, Severity] = {
    "0": "critical",
    "1": "critical",
    "2": "high",
    "3": "medium",
    "4": "low",
    "5": "info",
}
_RANKED = re.compile(r"(?:sev(?:erity)?|p(?:riority)?)?[-_ ]?([0-5])")

# Markers inside free text (alarm names, descriptions). Boundaries are "not a
# letter or digit" rather than \b, because `_` joins words in alarm names
# (checkout_sev1_latency) while \b would treat it as part of a word.
_B = r"(?<![A-Za-z0-9])"
_E = r"(?![A-Za-z0-9])"
_EXPLICIT = re.compile(_B + r"severity\s*[=:]\s*[\"']?([A-Za-z0-9]+)", re.IGNORECASE)
_SEV = re.compile(_B + r"sev[-_ ]?([0-5])(?![0-9])", re.IGNORECASE)
# `(?!\.\w)`: "p3.2xlarge" is an instance type, not a priority.
_PRIORITY = re.compile(_B + r"p([0-5])(?![0-9A-Za-z]|\.[0-9A-Za-z])", re.IGNORECASE)
_CRITICAL = re.compile(_B + r"(?:critical|crit)" + _E, re.IGNORECASE)
_WARNING = re.compile(_B + r"(?:warnings?|warn)" + _E, re.IGNORECASE)
# "CheckoutCriticalErrors" -> "Checkout Critical Errors", so CamelCase names work.
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def parse(value: str | None) -> Severity | None:
    """The severity a label value means ("warning", "P2", "sev1"), or None if unknown."""
    if value is None:
        return None
    word = value.strip().lower()
    if word in _WORDS:
        return _WORDS[word]
    ranked = _RANKED.fullmatch(word)
    return _RANKS[ranked.group(1)] if ranked else None


def normalize(value: str | None, *, default: Severity = DEFAULT) -> Severity:
    """The severity a label value means, or `default` when it means nothing known."""
    return parse(value) or default


def from_text(*texts: str | None, default: Severity = DEFAULT) -> Severity:
    """The severity that free text (an alarm name, a description) declares.

    Markers are tried from the most to the least explicit, each in all texts
    before the next: `severity=<word>`, then `sev1`..`sev5`, then `P1`..`P5`,
    then the words critical (critical) and warning (medium). Nothing found:
    `default`.
    """
    spaced = [_CAMEL.sub(" ", text) for text in texts if text]
    for text in spaced:
        for explicit in _EXPLICIT.finditer(text):
            found = parse(explicit.group(1))
            if found:
                return found
    for pattern in (_SEV, _PRIORITY):
        for text in spaced:
            ranked = pattern.search(text)
            if ranked:
                return _RANKS[ranked.group(1)]
    if any(_CRITICAL.search(text) for text in spaced):
        return "critical"
    if any(_WARNING.search(text) for text in spaced):
        return "medium"
    return default

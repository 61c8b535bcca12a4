"""Kubernetes-safe names and label values made from alarm fields.

Alarm fields are free text; Kubernetes names and label values are not. We
sanitize instead of rejecting: an alarm called "Checkout API: 5xx > 1%" is a
real alarm and must become an Incident.

Incident names are deterministic, so every webhook replica maps the same
alarm to the same object without talking to the others:

    <service>-<hash of fingerprint>        the first incident for an alarm
    <service>-<hash of fingerprint>-<n>    the n-th, once the (n-1)-th closed

and a group's (a grouping policy's, see `grouping.py`) after its key:

    <attribute values>-<hash of group key>[-<n>]
"""

from __future__ import annotations

import hashlib
import re

from ..grouping import Group

_NOT_NAME = re.compile(r"[^a-z0-9-]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._-]+")
SLUG_MAX = 40


def fingerprint_hash(fingerprint: str) -> str:
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:12]


def slug(text: str, *, limit: int = SLUG_MAX) -> str:
    """A DNS-1123 label fragment: lowercase alphanumerics and dashes."""
    cleaned = _NOT_NAME.sub("-", text.lower()).strip("-")
    cleaned = re.sub(r"-{2,}", "-", cleaned)[:limit].strip("-")
    return cleaned or "alarm"


def incident_name(*, service: str, fingerprint: str, generation: int = 1) -> str:
    base = f"{slug(service)}-{fingerprint_hash(fingerprint)}"
    return base if generation <= 1 else f"{base}-{generation}"


def group_incident_name(group: Group, generation: int = 1) -> str:
    base = f"{slug('-'.join(value for value in group.values if value) or 'group')}-{group.hash}"
    return base if generation <= 1 else f"{base}-{generation}"


def label_value(text: str) -> str:
    """A valid label value: <= 63 characters of [A-Za-z0-9._-], alphanumeric at both ends."""
    cleaned = _NOT_LABEL.sub("_", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)

"""The alarm sources, one module each. Adding a source: a module here, a line below."""

from __future__ import annotations

from ..alarm import AlarmSource
from . import alertmanager, cloudwatch, generic, sns

SOURCES: tuple[AlarmSource, ...] = (
    generic.source,
    cloudwatch.source,
    sns.source,
    alertmanager.source,
)

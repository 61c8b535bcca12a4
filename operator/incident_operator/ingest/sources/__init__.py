"""The alarm sources, one module each. Adding a source: a module here, a line below.

A source (`alarm.AlarmSource`) declares its path, payload model and parser,
and how its requests are let in: content types, whether the bearer token
applies, and a verification of its own (SNS: topic, age, signature, the
subscription handshake). The app serves every source the same way.
"""

from __future__ import annotations

from ..alarm import AlarmSource
from . import alertmanager, cloudwatch, generic, sns

SOURCES: tuple[AlarmSource, ...] = (
    generic.source,
    cloudwatch.source,
    sns.source,
    alertmanager.source,
)

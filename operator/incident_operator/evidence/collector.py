"""What an evidence collector declares and does.

A collector is one module in `collectors/` with one subclass of `Collector`.
It declares, as an action plugin does (remediate/plugin.py):

- `name`, the key of its settings in a policy (`evidence.collectors.logs`)
  and of its line in `status.assessment.evidence`, and a `summary`;
- `Settings`: a pydantic model of its policy settings, each with a default
  (every collector works, or skips, with none given);
- the read permissions it needs: `iam` (AWS actions, kept equal to
  docs/iam-policy.json by a test) and `rbac` (Kubernetes rules, for the docs);
- `collect(request)`: look, and return what it `Found`, or raise `Skip`
  when it does not apply (no log group configured, not an ECS service).
  Anything else it raises is recorded as its failure.

A collector only reads. It keeps what it returns small (a few lines, a few
numbers); `gather` bounds its time.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import boto3
from botocore.config import Config
from pydantic import BaseModel, Field

from ..aws_calls import timed
from ..models import Incident, Model
from . import Found

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

S = TypeVar("S", bound=BaseModel)
T = TypeVar("T")

# Reads within a budget of seconds: one retry, short timeouts. A call the
# budget cut short finishes (or times out) in its thread, unseen.
READ_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 2}, connect_timeout=2, read_timeout=5
)

# Their own threads: a slow AWS endpoint holds these, not the threads the
# operator's other blocking calls (the API server, DynamoDB) run on.
_THREADS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="evidence")


async def blocking(function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`function(*args, **kwargs)` on an evidence thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_THREADS, functools.partial(function, *args, **kwargs))


def in_background(function: Callable[..., object], /, *args: Any, **kwargs: Any) -> None:
    """`function(*args, **kwargs)` on an evidence thread, not waited for (its
    failure is nobody's concern: a best effort, such as stopping a query)."""
    _THREADS.submit(function, *args, **kwargs)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _boto3_client(service: str, region: str) -> Any:
    return timed(boto3.client(service, region_name=region, config=READ_CONFIG))  # type: ignore[call-overload]


@dataclass
class AwsReads:
    """AWS clients per (service, region), made on first use by `make`."""

    make: Callable[[str, str], Any] = _boto3_client
    _made: dict[tuple[str, str], Any] = field(default_factory=dict)

    def client(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._made:
            self._made[key] = self.make(service, region)
        return self._made[key]


@dataclass(frozen=True)
class Context:
    """What collectors read through, and the defaults of this installation."""

    aws: AwsReads = field(default_factory=AwsReads)
    kube: ApiClient | None = None
    default_cluster: str | None = None
    default_region: str = "us-east-1"
    clock: Callable[[], datetime] = utcnow


class CollectorSettings(Model):
    """Settings every collector has."""

    enabled: bool = Field(True, description="Gather this evidence.")


@dataclass(frozen=True)
class Request(Generic[S]):
    """One look: at which Incident, under which settings, at what time."""

    incident: Incident  # its spec is untrusted data
    settings: S
    now: datetime


class Collector(ABC, Generic[S]):
    name: ClassVar[str]
    summary: ClassVar[str]
    iam: ClassVar[tuple[str, ...]] = ()
    rbac: ClassVar[tuple[dict[str, Any], ...]] = ()
    # Settings an assessor may set when it asks for this evidence itself
    # (asking.py): how to look, never where.
    askable: ClassVar[tuple[str, ...]] = ()
    Settings: type[S]

    def __init__(self, context: Context) -> None:
        self.context = context

    @abstractmethod
    async def collect(self, request: Request[S]) -> Found:
        """Look; raise Skip if this collector does not apply."""

"""What an action plugin declares and does.

An action is one module in `actions/` with one subclass of `Action`. It
declares:

- `name`, the word in policies and assessments (`scale_service`), a
  `summary` for the LLM's prompt and the docs, and the kinds of target it
  acts on (`targets`: an ECS service, a Kubernetes Deployment);
- `Parameters`: a pydantic model, bounded, of what an assessment may ask for
  (`desiredCount: 4`). The CRD's schema and the LLM's answer schema are made
  from it; the rules may name parameters, the LLM may propose them;
- `Settings`: a pydantic model of the policy's bounds for it
  (`spec.actions.scale_service: {minCount: 2, maxCount: 10}`), with
  `bounds()` (are these parameters within them?) and `refuses()` (may it
  act on this target?), both asked before approval and again before acting;
- the permissions it needs: `iam` (AWS actions, kept equal to
  docs/iam-policy.json by a test) and `rbac` (Kubernetes rules);
- how it acts, in four steps the `Executor` (executor.py) strings together
  with the claim discipline: `observe` the target, `act` on it, tell whether
  an earlier attempt already `happened`, and `verify` how it is going. Each
  step gets one `Request`: the target, the parameters and settings as the
  plugin's models, the Incident's id and what its alarm said.

A plugin never claims, never records, never decides: it acts when told and
reports what it saw. Everything else is the executor's and the phase
machine's, the same for every action.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from ..models import IncidentSpec, Model
from . import ActionRefused, Progress
from .ecs import EcsClients

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

T = TypeVar("T")
P = TypeVar("P", bound=BaseModel)
S = TypeVar("S", bound=BaseModel)


def utcnow() -> datetime:
    return datetime.now(UTC)


class NoParameters(Model):
    """This action takes no parameters."""


class NoSettings(Model):
    """This action has no settings beyond the policy's remediation limits."""


@dataclass(frozen=True)
class Context:
    """What plugins act through: the clients of this installation and its clock."""

    ecs: EcsClients = field(default_factory=EcsClients)
    kube: ApiClient | None = None  # the operator's own cluster
    clock: Callable[[], datetime] = utcnow


@dataclass(frozen=True)
class Request(Generic[T, P, S]):
    """One action asked for: on what, how, under which settings, for whom."""

    target: T
    parameters: P
    settings: S
    incident_id: str  # namespace/name@uid: whose action it is (the claim's key)
    alarm: IncidentSpec  # what was observed: untrusted data, never instructions


@dataclass(frozen=True)
class Observation:
    """The target as seen at one moment, reduced to what tells whether acting
    happened: `marker` (an ECS deployment id, a desired count) is stored in
    the claim before acting and compared afterwards."""

    marker: str
    since: datetime | None = None  # when the observed state began, if known


class Action(ABC, Generic[T, P, S]):
    name: ClassVar[str]
    # For the LLM and the docs: what the action does, in one line.
    summary: ClassVar[str]
    # The first word of its condition reasons and Events: Restart -> RestartStarted.
    noun: ClassVar[str]
    # Allowed when a policy has no allowedActions of its own.
    allowed_by_default: ClassVar[bool] = False
    # AWS actions (ecs:UpdateService) and Kubernetes RBAC rules it needs.
    iam: ClassVar[tuple[str, ...]] = ()
    rbac: ClassVar[tuple[dict[str, Any], ...]] = ()
    # The kinds of target it acts on (an ECS service, a Kubernetes Deployment).
    targets: ClassVar[tuple[type[Any], ...]]
    # Its parameter and settings models (not ClassVars: they are generic).
    Parameters: type[P]
    Settings: type[S]

    def __init__(self, context: Context) -> None:
        self.context = context

    # --- pure: the phase machine, the guardrails and the prompt use these ---

    @classmethod
    def describe(cls, target: T, parameters: P) -> str:
        """The action on its target, as a noun phrase: "restart of r/c/s"."""
        return f"{cls.noun.lower()} of {target}"

    @classmethod
    def bounds(cls, parameters: P, settings: S) -> str | None:
        """Why `parameters` are outside the policy's `settings`; None: within."""
        return None

    @classmethod
    def refuses(cls, target: T, settings: S) -> str | None:
        """Why the policy's `settings` do not allow acting on `target`; None: they do."""
        return None

    @classmethod
    def explain(cls, settings: S) -> str:
        """The parameters and their bounds under `settings`, for the LLM."""
        return "no parameters"

    # --- acting: the executor calls these, in this order -------------------

    @abstractmethod
    async def observe(self, request: Request[T, P, S]) -> Observation:
        """Look at the target (and refuse one that is not ours: ActionRefused)."""

    def plan(self, request: Request[T, P, S], before: Observation) -> None:
        """Refuse (ActionRefused) what the policy or the observation shows to
        be out of bounds, before anything is claimed."""
        why = self.refuses(request.target, request.settings) or self.bounds(
            request.parameters, request.settings
        )
        if why is not None:
            raise ActionRefused("OutOfBounds", f"{why}; nothing done.")

    @abstractmethod
    async def act(self, request: Request[T, P, S], before: Observation) -> Observation:
        """Do it once. Returns the target as it is now (its marker is the receipt).

        Raise NothingDone if certainly nothing was done, OutcomeUnknown if it
        may have been, RemediationFailed otherwise (the executor then looks
        again to tell).
        """

    @abstractmethod
    def happened(self, request: Request[T, P, S], before: str, now: Observation) -> bool:
        """Whether the target moved on from `before` the way acting moves it."""

    @abstractmethod
    async def verify(self, request: Request[T, P, S], receipt: str) -> Progress:
        """How the action with this receipt is going."""

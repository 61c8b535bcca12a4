"""`scale_service`: set an ECS service's desired task count, within the policy's bounds.

The parameters ask for an absolute count (`desiredCount: 6`) or a step
relative to the count before acting (`step: 2`); the policy bounds both
(`spec.actions.scale_service: {minCount, maxCount, maxStep}`). An
assessment out of those bounds is refused before approval (guardrails); a
step that would leave them is refused before anything is claimed, when the
current count is known.

The marker is the service's desired count: acting sets it, so "happened"
is "the desired count is what this action asked for". Verified when the
running count reaches it with nothing pending; an autoscaler or a person
changing the desired count meanwhile fails the verification (the count is
no longer ours to judge).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from ...models import Model
from .. import ActionRefused, Progress, Target
from ..ecs import describe, update
from ..plugin import Action, Observation, Request

MAX_TASKS = 1000


class ScaleParameters(Model):
    """The new desired count, absolute or relative: exactly one of the two."""

    desired_count: Annotated[int, Field(ge=0, le=MAX_TASKS)] | None = Field(
        None, description="scale_service: the new desired task count."
    )
    step: Annotated[int, Field(ge=-100, le=100)] | None = Field(
        None, description="scale_service: tasks to add (or remove, negative) to the current count."
    )

    @model_validator(mode="after")
    def exactly_one(self) -> ScaleParameters:
        if (self.desired_count is None) == (self.step is None):
            raise ValueError("give exactly one of desiredCount and step")
        if self.step == 0:
            raise ValueError("a step of 0 changes nothing")
        return self


class ScaleSettings(Model):
    """The desired counts this policy allows, and the largest step."""

    min_count: Annotated[int, Field(ge=0, le=MAX_TASKS)] = Field(
        1, description="The lowest desired count allowed."
    )
    max_count: Annotated[int, Field(ge=0, le=MAX_TASKS)] = Field(
        10, description="The highest desired count allowed."
    )
    max_step: Annotated[int, Field(ge=1, le=MAX_TASKS)] | None = Field(
        None, description="The largest change in one action; unset: any within min and max."
    )

    @model_validator(mode="after")
    def ordered(self) -> ScaleSettings:
        if self.min_count > self.max_count:
            raise ValueError(f"minCount {self.min_count} is above maxCount {self.max_count}")
        return self


Scale = Request[Target, ScaleParameters, ScaleSettings]


class ScaleService(Action[Target, ScaleParameters, ScaleSettings]):
    name = "scale_service"
    summary = (
        "set the desired task count of the incident's own service; for load (CPU, memory, "
        "queue depth) that more tasks absorb, or to shed cost after a spike"
    )
    noun = "Scale"
    iam = ("ecs:DescribeServices", "ecs:UpdateService")
    targets = (Target,)
    Parameters = ScaleParameters
    Settings = ScaleSettings

    @classmethod
    def describe(cls, target: Target, parameters: ScaleParameters) -> str:
        if parameters.desired_count is not None:
            return f"scale of {target} to {parameters.desired_count} tasks"
        return f"scale of {target} by {parameters.step:+d} tasks"

    @classmethod
    def bounds(cls, parameters: ScaleParameters, settings: ScaleSettings) -> str | None:
        wanted = parameters.desired_count
        if wanted is not None and not settings.min_count <= wanted <= settings.max_count:
            return (
                f"desiredCount {wanted} is outside the policy's bounds "
                f"(minCount {settings.min_count}, maxCount {settings.max_count})"
            )
        step = parameters.step
        if step is not None and settings.max_step is not None and abs(step) > settings.max_step:
            return f"step {step:+d} is larger than the policy's maxStep {settings.max_step}"
        return None

    @classmethod
    def explain(cls, settings: ScaleSettings) -> str:
        largest = f", at most {settings.max_step} either way" if settings.max_step else ""
        return (
            f"exactly one of desiredCount (the new task count, {settings.min_count} to "
            f"{settings.max_count}) and step (tasks to add, or remove if negative{largest})"
        )

    async def observe(self, request: Scale) -> Observation:
        service = await describe(self.context.ecs, request.target)
        return Observation(marker=str(service.get("desiredCount", 0)))

    def plan(self, request: Scale, before: Observation) -> None:
        parameters, settings = request.parameters, request.settings
        why = self.bounds(parameters, settings)
        wanted = _wanted(before.marker, parameters)
        if why is None and not settings.min_count <= wanted <= settings.max_count:
            why = (
                f"{before.marker} tasks {parameters.step:+d} would be {wanted}, outside the "
                f"policy's bounds (minCount {settings.min_count}, maxCount {settings.max_count})"
            )
        if why is not None:
            raise ActionRefused("OutOfBounds", why + "; nothing scaled.")

    async def act(self, request: Scale, before: Observation) -> Observation:
        wanted = _wanted(before.marker, request.parameters)
        service = await update(
            self.context.ecs,
            request.target,
            doing=f"scale ECS service {request.target} to {wanted} tasks",
            desiredCount=wanted,
        )
        return Observation(marker=str(service.get("desiredCount", wanted)))

    def happened(self, request: Scale, before: str, now: Observation) -> bool:
        return now.marker == str(_wanted(before, request.parameters))

    async def verify(self, request: Scale, receipt: str) -> Progress:
        service = await describe(self.context.ecs, request.target)
        desired = service.get("desiredCount", 0)
        if str(desired) != receipt:
            return "Failed"  # someone else set another count: not ours to judge
        steady = service.get("runningCount", 0) == desired and service.get("pendingCount", 0) == 0
        return "Succeeded" if steady else "InProgress"


def _wanted(before: str, parameters: ScaleParameters) -> int:
    if parameters.desired_count is not None:
        return parameters.desired_count
    return max(int(before) + (parameters.step or 0), 0)

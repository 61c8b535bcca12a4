"""Evidence an assessor asks for itself: Gemini's function calls, answered by
the same read-only collectors, a few times, within what is left of the budget.

Each collector offers only the settings it declares `askable` (a longer
metric window, another Logs Insights query over the same log group), never
where it reads: the log group, the namespaces and the service stay the
policy's and the Incident's, whatever the model asks. An unknown
collector, arguments that do not fit, a spent budget or a spent number of
calls are answers too (a failed finding), so the model learns why.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue, ValidationError

from ..models import Incident
from . import Finding
from .collector import Context, Request
from .registry import AnyCollector


@dataclass
class Asker:
    """Runs collectors on request, for one assessment."""

    incident: Incident
    context: Context
    collectors: Mapping[str, type[AnyCollector]]  # the enabled ones
    settings: Mapping[str, dict[str, JsonValue]]  # the policy's, per collector
    deadline: float  # time.monotonic() when the evidence budget is spent
    calls_left: int
    asked: list[Finding] = field(default_factory=list)

    def declarations(self) -> list[dict[str, Any]]:
        """One function per collector: its name, what it reads, what may be asked of it."""
        return [
            {
                "name": name,
                "description": f"Read-only: {cls.summary}.",
                "parameters_json_schema": {
                    "type": "object",
                    "properties": _askable(cls),
                },
            }
            for name, cls in self.collectors.items()
        ]

    async def ask(self, name: str, arguments: Mapping[str, Any]) -> Finding:
        from .gather import run

        started = time.monotonic()
        finding = await self._ask(name, arguments, started, run)
        self.asked.append(finding)
        return finding

    async def _ask(
        self, name: str, arguments: Mapping[str, Any], started: float, run: Any
    ) -> Finding:
        def refused(why: str) -> Finding:
            # The name is the model's: kept only if it is a collector's.
            return Finding(name if name in self.collectors else "unknown", "failed", why, 0)

        if self.calls_left <= 0:
            return refused("no more evidence calls for this assessment")
        self.calls_left -= 1
        cls = self.collectors.get(name)
        if cls is None:
            return refused(f"no such collector; known: {', '.join(self.collectors)}")
        allowed = set(_askable(cls))
        extra = sorted(set(arguments) - allowed)
        if extra:
            return refused(f"cannot be asked for {', '.join(extra)}; only {sorted(allowed)}")
        try:
            settings = cls.Settings.model_validate({**self.settings.get(name, {}), **arguments})
        except ValidationError as error:
            return refused(f"arguments refused: {error.errors(include_url=False)[0]['msg']}")
        left = self.deadline - started
        if left <= 0:
            return Finding(name, "timedOut", "the evidence budget is spent", 0)
        request = Request(incident=self.incident, settings=settings, now=self.context.clock())
        try:
            return await asyncio.wait_for(run(cls(self.context), request, started), left)
        except TimeoutError:
            elapsed = int((time.monotonic() - started) * 1000)
            return Finding(
                name, "timedOut", "no answer within what was left of the budget", elapsed
            )


def _askable(cls: type[AnyCollector]) -> dict[str, Any]:
    """The JSON schema of the settings the model may set, in the API's subset."""
    schema = cls.Settings.model_json_schema(by_alias=True)
    keep = ("type", "description", "minimum", "maximum", "enum", "maxLength")
    return {
        name: {k: v for k, v in prop.items() if k in keep}
        for name, prop in schema.get("properties", {}).items()
        if name in cls.askable
    }

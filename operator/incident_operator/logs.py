"""JSON log lines, one per event, with the Incident's name when there is one."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from . import __version__

# Attributes every LogRecord has; anything else came from `extra=` and is ours.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


_PLAIN = (str, int, float, bool, type(None), list, tuple)

# Libraries that say too much at INFO for an operator's log.
_QUIETER = {
    "kopf.objects": logging.WARNING,  # "Handler ... succeeded" for every event
    "kopf.activities.probe": logging.WARNING,
    "aiohttp.access": logging.WARNING,
    "botocore.credentials": logging.WARNING,
    "botocore.configprovider": logging.WARNING,
    "uvicorn.access": logging.WARNING,
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Only plain values from `extra=`: libraries (kopf) attach whole
        # objects there, which would make every line kilobytes long.
        line.update(
            {
                k: v
                for k, v in record.__dict__.items()
                if k not in _STANDARD and not k.startswith("_") and isinstance(v, _PLAIN)
            }
        )
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str = "INFO", *, component: str | None = None) -> None:
    """JSON lines on stderr; with `component`, a first line saying what runs, which version."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    if root.level > logging.DEBUG:
        for name, quieter in _QUIETER.items():
            logging.getLogger(name).setLevel(quieter)
    if component is not None:
        logging.getLogger("incident_operator").info(
            "incident-operator %s %s starting",
            component,
            __version__,
            extra={"component": component, "version": __version__},
        )

"""Fixtures for the alarm parsers: they need no control plane, only payloads."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads"


@pytest.fixture
def payload() -> Callable[[str], dict[str, Any]]:
    """Load a JSON payload from tests/payloads/ (a fresh copy each call, free to modify)."""

    def load(name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((PAYLOADS / name).read_text())
        return data

    return load

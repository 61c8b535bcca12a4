"""Plugins found by convention: every module of a package, its one subclass of a base.

The action registry (remediate/registry.py) and the evidence collectors
(evidence/registry.py) are found the same way: adding one is adding a module.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterable
from types import ModuleType
from typing import Any


def discover(
    package: ModuleType, base: type[Any], *, reserved: Iterable[str] = ()
) -> dict[str, Any]:
    """Every subclass of `base` defined in a module of `package`, by its `name`,
    in module order; ValueError if two share a name (or take a reserved one)."""
    taken = set(reserved)
    found: dict[str, Any] = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__)):
        loaded = importlib.import_module(f"{package.__name__}.{module}")
        for _, cls in inspect.getmembers(loaded, inspect.isclass):
            if issubclass(cls, base) and cls.__module__ == loaded.__name__:
                name: str = getattr(cls, "name")  # noqa: B009  # every plugin declares one
                if name in found or name in taken:
                    raise ValueError(f"two {base.__name__.lower()}s are named {name}")
                found[name] = cls
    return found

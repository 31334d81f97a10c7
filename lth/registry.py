"""Plugin discovery: every file of a plugin package (`lth.arms`, `lth.methods`, `lth.schedules`) is imported, and
each class in it that derives from the package's base class and names itself (`name = ...`) is registered under
that name. Adding a plugin is adding its file; nothing else lists it."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

T = TypeVar("T")


def _subclasses(base: type) -> list[type]:
    return [c for sub in base.__subclasses__() for c in (sub, *_subclasses(sub))]


def discover(package: str, base: type[T]) -> dict[str, T]:
    """One instance of each plugin of `package`, by name, in the order of their `order` and then their names."""
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")
    plugins = {c for c in _subclasses(base) if "name" in c.__dict__ and c.__module__.startswith(f"{package}.")}
    return {c.name: c() for c in sorted(plugins, key=lambda c: (c.order, c.name))}

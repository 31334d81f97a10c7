"""Plugin discovery: every file of a plugin package (`lth.arms`, `lth.methods`, `lth.schedules`) is imported, and
each class in it that derives from the package's base class and names itself (`name = ...`) is registered under
that name. Adding a plugin is adding its file; nothing else lists it. A class of a module outside lth, imported as
an experiment's plugin (`lth.plugins`), is registered alike by `extend`; a setting that names code by import path
(`package.module:Callable`: a model, a dataset) imports it with `callable_at`."""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


def _subclasses(base: type) -> list[type]:
    return [c for sub in base.__subclasses__() for c in (sub, *_subclasses(sub))]


def discover(package: str, base: type[T]) -> dict[str, T]:
    """One instance of each plugin of `package`, by name, in the order of their `order` and then their names."""
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")
    plugins = {c for c in _subclasses(base) if "name" in c.__dict__ and c.__module__.startswith(f"{package}.")}
    return {c.name: c() for c in sorted(plugins, key=lambda c: (c.order, c.name))}


def _live(c: type) -> bool:
    """Whether a class is still what its module names (not a class of a module since imported again)."""
    module = sys.modules.get(c.__module__)
    return module is not None and getattr(module, c.__qualname__, None) is c


def extend(registry: dict[str, T], base: type[T]) -> None:
    """Register, in place, the classes deriving from `base` that name themselves in modules outside lth (a user's
    plugins, imported by `lth.plugins.load`), keeping the registry in its order. A name already taken by another
    class is refused: a plugin never replaces a built-in one unnoticed."""
    added = {c for c in _subclasses(base) if "name" in c.__dict__ and not c.__module__.startswith("lth.") and _live(c)}
    for c in sorted(added, key=lambda c: (c.__module__, c.__qualname__)):
        taken = type(registry[c.name]) if c.name in registry else c
        if (taken.__module__, taken.__qualname__) != (c.__module__, c.__qualname__):
            raise ValueError(f"{c.__module__}.{c.__qualname__}: the name {c.name!r} is taken by {taken.__module__}.{taken.__qualname__}")
        if taken is not c or c.name not in registry:  # new, or its module imported again (a notebook, a test)
            registry[c.name] = c()
    ordered = sorted(registry.items(), key=lambda item: (type(item[1]).order, item[0]))
    registry.clear()
    registry.update(ordered)


def callable_at(path: str, setting: str) -> Callable:
    """What `package.module:Callable` names (a model's builder, a dataset's), imported; one line naming `setting`
    if it cannot be."""
    module, _, attribute = path.partition(":")
    if os.getcwd() not in sys.path:  # a user's file beside their experiment, as for `plugins`
        sys.path.insert(0, os.getcwd())
    try:
        found = importlib.import_module(module)
    except Exception as err:  # noqa: BLE001 - any failure to import the user's module is theirs to read, in one line
        raise ValueError(f"{setting}: cannot import {module} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    thing = getattr(found, attribute, None)
    if not callable(thing):
        raise ValueError(f"{setting}: {module} has no callable {attribute!r}")
    return thing


def suggestion(word: object, choices) -> str:
    """"; did you mean 'X'?" for the closest of `choices` to a misspelled `word` (by difflib's similarity, then the
    longer common prefix: `resnet2O` means resnet20, not resnet32), or "" if none is close."""
    word = str(word)
    scored = [(difflib.SequenceMatcher(None, word, c).ratio(), len(os.path.commonprefix([word, c])), c) for c in map(str, choices)]
    best = max(scored, default=None)
    return f"; did you mean {best[2]!r}?" if best and best[0] >= 0.6 else ""

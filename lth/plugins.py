"""Code from outside the package: the experiment's `plugins` (modules to import, by name) and every installed
package's entry points in the group `lth.plugins`. What they define registers exactly as lth's own does: arms,
methods and schedules by deriving from their base class and naming themselves (`lth.registry.extend`), models by
`lth.models.register` (or any `nn.Module` named by import path, `model: package.module:Callable`).

The list is recorded in the run's config.yaml, so every later command on the run (report, export, sensitivity,
stability, a requeued SLURM job) imports them again, with no launcher script.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import sys
from importlib.metadata import entry_points, packages_distributions, version
from pathlib import Path

GROUP = "lth.plugins"


class PluginError(ValueError):
    """A plugin that cannot be imported or clashes with a name already taken: one line, exit 2."""


def load(modules: list[str]) -> None:
    """Import `modules` and the installed entry points, then register what they define. The current directory is
    searched first, as `python -m` does, so that a user's `mymodels.py` beside their experiment is found by the
    `lth` command too."""
    from lth.arms import ARMS, Arm
    from lth.methods import METHODS, Method
    from lth.registry import extend
    from lth.schedules import SCHEDULES, Schedule

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    found = [(name, lambda name=name: importlib.import_module(name)) for name in modules]
    found += [(f"{point.value} (entry point {point.name} of {GROUP})", point.load) for point in entry_points(group=GROUP)]
    for name, load_it in found:
        try:
            load_it()
        except Exception as err:  # noqa: BLE001 - a user's module may fail in any way; one line, theirs to read
            raise PluginError(f"plugins: {name} could not be imported ({type(err).__name__}: {_first_line(err)})") from None
    for registry, base in ((ARMS, Arm), (METHODS, Method), (SCHEDULES, Schedule)):
        try:
            extend(registry, base)
        except ValueError as err:
            raise PluginError(f"plugins: {err}") from None


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else ""


def code_digest(obj: object) -> str:
    """What identifies the code of a user's model or plugin, for a run's identity (`Experiment.identity`): the
    sha256 of its source, every `.py` file of its top-level package (a helper module it imports may hold the
    change), or, for code installed in site-packages, its distribution and version."""
    return _digest(obj.__module__.partition(".")[0])


@functools.cache
def _digest(top: str) -> str:
    module = importlib.import_module(top)
    # A package's folders (a folder without __init__.py, such as a project's experiments/, is a namespace package
    # with no file of its own), or a lone module's file.
    if getattr(module, "__file__", None):
        origin = Path(module.__file__)
        folders, files = [origin.parent], None if origin.name == "__init__.py" else [origin]
    elif getattr(module, "__path__", None):
        # Each folder once: a namespace package lists its folder once per sys.path entry that reaches it ('' and the
        # working directory, under `python -c`, pytest or a notebook; `lth.registry.callable_at` adds the latter),
        # and hashing it twice gave the same experiment another run id than under `lth` or `python -m`.
        folders, files = list(dict.fromkeys(Path(folder).resolve() for folder in module.__path__)), None
    else:  # a notebook's or an interpreter's own code: nothing on disk says what it was
        raise PluginError(f"{top}: code with no source file (a notebook's, an interactive session's) cannot be identified, and a run's identity "
                          "must know it; define it in a module and name it by import path")
    if any("site-packages" in folder.parts or "dist-packages" in folder.parts for folder in folders):
        names = packages_distributions().get(top, [top])
        return "; ".join(f"{name} {version(name)}" for name in names)
    digest = hashlib.sha256()
    for folder in folders:
        for path in files or sorted(folder.rglob("*.py")):
            digest.update(f"{path.relative_to(folder)}\0".encode() + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]

"""The settings reference, generated from the typed configuration itself: each setting's key, type and default from
its dataclass field (`lth.config.setting_fields`), and its meaning from the comment the field carries in the source
(the lines directly above it and any on its own line). The comments are the one place a setting is explained, so
the docs site's reference and the code cannot drift apart; a test fails on a setting without one. Likewise the
commands page, from the command line's own help, and the results-line page, from `lth.run_dir.Row`.
`python -m lth.reference` writes the pages (`PAGES`) under docs/; a test checks the committed ones are current.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import io
import json
import os
import re
import textwrap
import tokenize
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Setting:
    key: str  # dotted, as the YAML nests it and the command line spells it (`--train.lr=0.05`)
    type: str  # as the source annotates it
    default: object
    doc: str  # the field's comment, or "" for one without


def settings() -> list[Setting]:
    from lth import config

    defaults = config.settings()
    registered = _registered()
    out = []
    for key, (cls, f) in config.setting_fields().items():
        if not cls.__module__.startswith("lth."):  # a user's plugin, imported in this process: its docs are its own
            continue
        kind, doc = _declared(cls, f.name)
        if key in registered:
            doc += " Registered: " + ", ".join(f"`{name}`" for name in registered[key]) + "."
        out.append(Setting(key, kind, defaults[key], doc))
    return out


def _registered() -> dict[str, list[str]]:
    """The names a setting takes from a registry, listed from the registry itself (a plugin's join them)."""
    from lth.arms import ARMS
    from lth.datasets import DATASETS
    from lth.methods import METHODS
    from lth.models import MODELS
    from lth.schedules import SCHEDULES

    def own(registry: dict, module) -> list[str]:  # lth's own, not a user's plugin imported in this process
        return [name for name, entry in registry.items() if module(entry).startswith("lth.")]

    plugin = lambda entry: type(entry).__module__  # noqa: E731
    return {"model.name": own(MODELS, lambda fn: fn.__module__), "data.name": own(DATASETS, lambda spec: spec.load.__module__), "arms": own(ARMS, plugin),
            "prune.method": own(METHODS, plugin), "prune.schedule": own(SCHEDULES, plugin)}


def _declared(cls: type, name: str) -> tuple[str, str]:
    """(type, doc) of field `name` as the class that declares it writes them (a subclass may inherit it)."""
    owner = next(c for c in cls.__mro__ if name in getattr(c, "__annotations__", {}))
    return _fields(owner).get(name, ("", ""))


@cache
def _fields(cls: type) -> dict[str, tuple[str, str]]:
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above, line = [], node.lineno - 1
            while line in comments and lines[line - 1].lstrip().startswith("#"):  # the comment block right above it
                above.insert(0, comments[line])
                line -= 1
            beside = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
            out[node.target.id] = (ast.unparse(node.annotation), " ".join(above + beside))
    return out


HEADER = """# Settings

Every setting of an experiment, as its YAML nests it (`train: {lr: 0.05}`) and the command line spells it
(`--train.lr=0.05`), with its type and default. A plugin's own settings sit under its name: a method's or a
schedule's under `prune.<name>`, an arm's at the top level. Generated from the typed configuration by
`python -m lth.reference`; a test fails when this page and the code disagree.

"""


def markdown() -> str:
    """The reference page: one table row per setting, then each of lth's pruning methods with what it removes and the
    settings it needs beyond its name (`Method.example`)."""
    rows = [HEADER + "| setting | type | default | meaning |", "|---|---|---|---|"]
    for s in settings():
        doc = s.doc.replace("|", "\\|")  # a table cell
        rows.append(f"| `{s.key}` | `{_cell(s.type)}` | `{json.dumps(s.default, default=str)}` | {doc} |")
    return "\n".join(rows + ["", *methods()])


def methods() -> list[str]:
    from lth.methods import METHODS

    rows = ["## Pruning methods", "", "Each `prune.method`: the paper its file follows first, what it removes, and the settings it needs on lth's",
            "own small networks beyond its name (`Method.example`).", "", "| method | paper | removes | example |", "|---|---|---|---|"]
    for name in _registered()["prune.method"]:
        m = METHODS[name]
        paper = re.search(r"\(([A-Z][^()]*?\d{4})", inspect.getmodule(type(m)).__doc__)
        removes = m.unit(m.Params() if m.Params else None, dict).removes
        rows.append(f"| `{name}` | {' '.join(paper.group(1).split()) if paper else ''} | {removes} | `{' '.join([f'--prune.method={name}', *m.example])}` |")
    return rows


def _cell(annotation: str) -> str:
    """A type for a table cell, whose columns `|` separates: `int | None` as `int or None`."""
    return annotation.replace(" | ", " or ")


def commands() -> str:
    """The commands page: `lth --help`, then each command's own help (`lth run` and `lth stability` list their settings
    there; this page leaves those to the settings page)."""
    from lth import cli

    def said(argv: list[str]) -> str:
        out = io.StringIO()
        # argparse wraps to the terminal's width: a fixed one, so that the page is the same wherever it is generated.
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit), _environment(COLUMNS="100"):  # --help exits
            cli.main(argv)
        return out.getvalue().split("\n\nSettings (")[0].rstrip()

    parts = ["# Commands\n\nEvery command of `lth`, as its `--help` says it; generated from the command line itself. The settings "
             "`lth run` and `lth stability` take are on the [settings page](settings.md).\n\n```text\n" + said(["--help"]) + "\n```"]
    parts += [f"## lth {name}\n\n```text\n{said([name, '--help'])}\n```" for name in cli.COMMANDS]
    return "\n\n".join(parts)


def results() -> str:
    """The results-line page: each field of `lth.run_dir.Row` with its type and meaning."""
    from lth.run_dir import Row

    rows = ["# The results line\n\nEach finished (level, arm) of a run appends one JSON line to its `results.jsonl`, with these fields "
            "(`lth.run_dir.Row`; generated from its declaration). The report, W&B and the driver read them; a line with a field of the wrong "
            "type or an unknown arm stops them with its file and line.\n\n| field | type | meaning |", "|---|---|---|"]
    fields = _fields(Row)
    for f in dataclasses.fields(Row):
        kind, doc = fields[f.name]
        rows.append(f"| `{f.name}` | `{_cell(kind)}` | {doc.replace('|', '/')} |")
    return "\n".join(rows)


@contextlib.contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# The generated pages of the docs site, by path under docs/: `python -m lth.reference` writes them.
PAGES = {"reference/settings.md": markdown, "reference/commands.md": commands, "reference/results.md": results}

if __name__ == "__main__":
    from pathlib import Path

    for path, page in PAGES.items():
        (Path("docs") / path).write_text(page() + "\n")

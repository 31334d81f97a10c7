"""The settings reference, generated from the typed configuration itself: each setting's key, type and default from
its dataclass field (`lth.config.setting_fields`), and its meaning from the comment the field carries in the source
(the lines directly above it and any on its own line). The comments are the one place a setting is explained, so
the docs site's reference (`docs/hooks.py`) and the code cannot drift apart; a test fails on a setting without one.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
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
    out = []
    for key, (cls, f) in config.setting_fields().items():
        kind, doc = _declared(cls, f.name)
        out.append(Setting(key, kind, defaults[key], doc))
    return out


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
`python -m lth.reference > docs/reference/settings.md`; a test fails when this page and the code disagree.

"""


def markdown() -> str:
    """The reference page: one table row per setting."""
    rows = [HEADER + "| setting | type | default | meaning |", "|---|---|---|---|"]
    for s in settings():
        doc = s.doc.replace("|", "\\|")  # a table cell
        rows.append(f"| `{s.key}` | `{s.type}` | `{json.dumps(s.default, default=str)}` | {doc} |")
    return "\n".join(rows)



if __name__ == "__main__":
    print(markdown())

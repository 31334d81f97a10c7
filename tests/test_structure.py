"""The shape of the code that newcomers rely on: no import cycles, and every registry name is a config value."""

import ast
import dataclasses
from pathlib import Path

import pytest
from conftest import here

from lth import config
from lth.arms import ARMS
from lth.methods import METHODS
from lth.schedules import SCHEDULES

PACKAGE = Path(__file__).resolve().parents[1] / "lth"
# What each schedule needs besides its name to be a valid tiny experiment (the nested and the flat spellings both); a
# method says so itself (`Method.example`).
NEEDS = {
    **{name: list(method.example) for name, method in METHODS.items()},
    "oneshot": ["--prune.oneshot.target=0.5", "--prune.levels=1"],
    "gradual": ["--prune.target=0.5", "--prune.levels=1", "--prune.begin_step=7", "--prune.end_step=30", "--prune.frequency=5"],
    "earlybird": ["--prune.earlybird.target=0.5", "--prune.levels=1"],
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The lth modules a file imports anywhere: inside functions and under `if TYPE_CHECKING:` too, since a
    circle of type-only imports is a circle of dependencies all the same."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lth")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lth"):
            for alias in node.names:  # `from lth import masks` imports the module lth.masks
                sub = f"{node.module}.{alias.name}"
                found.add(sub if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists() else node.module)
    return found


def test_lth_has_no_import_cycles():
    graph = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py")}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(target) :] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_config_accepts_exactly_the_registered_names(tiny):
    for arm in ARMS:
        assert config.load(None, tiny + [f"--arms=[{arm}]"]).arms == [arm]
    for key, registry in (("method", METHODS), ("schedule", SCHEDULES)):
        for name in registry:
            assert getattr(config.load(None, tiny + [f"--prune.{key}={name}", *NEEDS.get(name, [])]).prune, key) == name
        with pytest.raises(config.ConfigError, match=f"prune.{key}: unknown {key} 'nonesuch' \\(known: "):
            config.load(None, tiny + [f"--prune.{key}=nonesuch"])
    with pytest.raises(config.ConfigError, match="arms: unknown arm fintune"):
        config.load(None, tiny + ["--arms=[ticket,fintune]"])


def test_type_only_imports_count_as_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lth.imp import Run\n")
    assert _imports(module) == {"lth.imp"}


def test_settings_added_later_keep_earlier_run_directories(tiny):
    """A run made before `prune.method` and `prune.schedule` existed computed magnitude pruning on iterative
    levels; at those values its identity, and so its directory, is unchanged, while another value is a new run."""
    cfg = config.load(None, tiny)
    assert "method" not in cfg.identity()["prune"] and "schedule" not in cfg.identity()["prune"]
    cfg.prune.method = "snip"
    assert cfg.identity()["prune"]["method"] == "snip" and cfg.run_id() != config.load(None, tiny).run_id()


def _every_run_id(tiny, fake_imagenet) -> dict[str, str]:
    """The run ids of every shipped experiment and of the tiny one under every method and schedule."""
    ids = {str(p): config.load_seeds(p, here(p, fake_imagenet))[0].run_id() for p in sorted(Path("experiments").glob("*.yaml"))}
    for key, registry in (("method", METHODS), ("schedule", SCHEDULES)):
        for name in registry:
            ids[name] = config.load(None, tiny + [f"--prune.{key}={name}", *NEEDS.get(name, [])]).run_id()
    return ids


def test_a_new_setting_at_its_default_renames_no_run_directory(tiny, monkeypatch, fake_imagenet):
    """Adding a setting, to a section of the experiment or to a plugin's own settings, leaves every existing run
    id as it was while the setting is at its default; a run that sets it is another run."""
    before = _every_run_id(tiny, fake_imagenet)
    added = dataclasses.make_dataclass("TrainConfig", [("label_smoothing", float, dataclasses.field(default=0.0))], bases=(config.TrainConfig,))
    monkeypatch.setattr(config, "TrainConfig", added)
    nm_params = dataclasses.make_dataclass("Params", [("permute", bool, dataclasses.field(default=False))], bases=(METHODS["nm"].Params,))
    monkeypatch.setattr(type(METHODS["nm"]), "Params", nm_params)
    assert config.load(None, tiny).train.label_smoothing == 0
    assert _every_run_id(tiny, fake_imagenet) == before
    assert config.load(None, tiny + ["--train.label_smoothing=0.1"]).run_id() != before["iterative"]
    assert config.load(None, tiny + ["--prune.method=nm", "--prune.levels=1", "--prune.nm.permute=true"]).run_id() != before["nm"]

"""Your own code, from outside the package (issue 32): a plain `nn.Module` by import path and arms, methods and
schedules from a plugin module register as lth's own do, every command finds them again from the run's config.yaml
with no launcher, and editing them gives another run rather than the old results."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY

from lth import cli, config
from lth.imp import Run

LIMIT = 300
QUICKSTART = str(Path("experiments/quickstart.yaml").resolve())

MODEL = '''
from torch import nn


class SmallCNN(nn.Module):
    """A plain module: no lth attribute, no packing convention."""

    def __init__(self, input_shape, num_classes, width=8):
        super().__init__()
        self.channels = input_shape[0] if len(input_shape) > 1 else 1
        channels = self.channels
        self.features = nn.Sequential(nn.Conv1d(channels, width, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(8))
        self.head = nn.Linear(width * 8, num_classes)

    def forward(self, x):
        return self.head(self.features(x.view(len(x), self.channels, -1)).flatten(1))
'''
PLUGINS = '''
import torch
from lth.arms.base import INIT, Arm
from lth.methods.base import Method
from lth.schedules.base import Schedule


class FreshInit(Arm):
    """A user's control: the ticket's masks on a fresh init (reinit under another name)."""
    name = "fresh_init"
    order = 50
    weights = INIT


class Smallest(Method):
    """Keeps the smallest weights: the opposite of magnitude pruning."""
    name = "smallest"

    def scores(self, scoring, params):
        return {n: -scoring.trained[n].abs() for n in scoring.masks}


class Halving(Schedule):
    name = "halving"

    def fraction(self, params, fraction):
        return 0.5
'''


def _write(folder: Path, **modules: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in modules.items():
        (folder / f"{name}.py").write_text(text)


def _lth(args, cwd):
    """The plain `lth` command, as a user types it (no launcher, no `python -m`: the current directory is not on its path)."""
    command = Path(sys.executable).with_name("lth")
    return subprocess.run([str(command), *args], capture_output=True, text=True, cwd=cwd, timeout=LIMIT, env={**os.environ, "WANDB_MODE": "disabled"})


def _said(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lth:")]


def _tiny(tmp_path, *extra):
    return [*(a for a in TINY if not a.startswith("--model=")), "--model.name=mymodels:SmallCNN", "--model.kwargs={width: 8}", "--plugins=[myplugins]",
            f"--out_dir={tmp_path / 'runs'}", "--name=own", *extra]


@pytest.mark.slow
def test_a_plain_module_and_plugins_run_every_command_through_the_plain_lth_command(tmp_path):
    _write(tmp_path, mymodels=MODEL, myplugins=PLUGINS)
    args = _tiny(tmp_path, "--arms=[ticket,reinit,fresh_init]", "--prune.method=smallest", "--prune.schedule=halving", "--prune.levels=1")
    done = _lth(["run", QUICKSTART, *args], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mymodels:SmallCNN is not written in lth's packing convention" in done.stderr
    (run_dir,) = (p.parent for p in (tmp_path / "runs" / "own").glob("*/config.yaml"))
    assert run_dir.name.startswith("mymodels:SmallCNN-synthetic-seed0-")
    arms = [json.loads(line)["arm"] for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert sorted(arms) == ["fresh_init", "reinit", "ticket", "ticket"]
    assert "plugins:\n- myplugins" in (run_dir / "config.yaml").read_text()
    elsewhere = tmp_path / "elsewhere"  # every later command reads the run's config.yaml, from the run's folder's side
    elsewhere.mkdir()
    for command in (["report", str(run_dir), "--out", str(tmp_path / "report")], ["export", str(run_dir), "--level=1", f"--out={tmp_path / 'own.pt'}"],
                    ["sensitivity", str(run_dir), "--level=1", "--fractions=[0.5]"], ["stability", QUICKSTART, *args, "--levels=[1]", "--alphas=3"]):
        later = _lth(command, tmp_path)
        assert later.returncode == 0, (command, later.stderr[-3000:])
    assert (tmp_path / "report" / "report.md").exists() and (tmp_path / "own.pt").exists() and (run_dir / "stability.jsonl").exists()


def test_editing_a_users_model_gives_another_run(tmp_path, monkeypatch):
    """The stale-model trap: the run id knows the model by its code, not its name alone."""
    _write(tmp_path, mymodels=MODEL, myplugins=PLUGINS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("mymodels", "myplugins"):  # this process's modules of these names, if another test imported them, are not these
        monkeypatch.delitem(sys.modules, name, raising=False)
    before = config.load(QUICKSTART, _tiny(tmp_path)).identity()
    (tmp_path / "mymodels.py").write_text(MODEL.replace("nn.ReLU()", "nn.Tanh()"))
    from lth import plugins

    plugins._digest.cache_clear()  # a new process reads the file anew; this one cached it
    after = config.load(QUICKSTART, _tiny(tmp_path)).identity()
    assert config._digest(before) != config._digest(after) and before["code"]["model"] != after["code"]["model"]
    assert before["code"].keys() == {"model"}, "lth's own method and schedule are known by name"
    assert {k: v for k, v in before.items() if k != "code"} == {k: v for k, v in after.items() if k != "code"}
    built_in = config.load(QUICKSTART, [*TINY])
    assert "code" not in built_in.identity(), "lth's own models keep their run ids"


def test_a_model_in_a_folder_without_init_is_identified_by_every_file_of_the_folder(tmp_path, monkeypatch):
    """A project's own folder of code (experiments/mymodels.py) is a namespace package, with no file of its own: it
    was refused as if it were a notebook's code. Its digest covers the folder, so a helper's edit is noticed too."""
    _write(tmp_path / "project", mymodels=MODEL, helpers="WIDTH = 8\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "project", raising=False)
    args = [*(a for a in TINY if not a.startswith("--model=")), "--model.name=project.mymodels:SmallCNN", f"--out_dir={tmp_path / 'runs'}"]
    from lth import plugins

    before = config.load(QUICKSTART, args).identity()["code"]["model"]
    (tmp_path / "project" / "helpers.py").write_text("WIDTH = 16\n")
    plugins._digest.cache_clear()
    assert config.load(QUICKSTART, args).identity()["code"]["model"] != before


def test_a_folder_of_code_has_one_run_id_however_python_was_started(tmp_path):
    """A namespace package lists its folder once per sys.path entry that reaches it: under `python -c`, pytest or a
    notebook both '' and the working directory do (`callable_at` adds the latter), and the folder was hashed twice,
    so the same experiment had one run id there and another under `lth` or `python -m`."""
    _write(tmp_path / "project", mymodels=MODEL, helpers="WIDTH = 8\n")
    script = ("import sys; from lth import config\n"
              f"cfg = config.load({QUICKSTART!r}, {[a for a in TINY if not a.startswith('--model=')] + ['--model.name=project.mymodels:SmallCNN']!r})\n"
              "print(cfg.run_id()); import project; print(len(project.__path__))")
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    as_c = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    (tmp_path / "probe.py").write_text(script)
    as_m = subprocess.run([sys.executable, "-m", "probe"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert as_c.returncode == as_m.returncode == 0, as_c.stderr[-2000:] + as_m.stderr[-2000:]
    (id_c, folders_c), (id_m, folders_m) = as_c.stdout.split(), as_m.stdout.split()
    assert (folders_c, folders_m) == ("2", "1")  # the folder listed twice under -c, once under -m
    assert id_c == id_m


@pytest.mark.parametrize("modules, extra, message", [
    ({"myplugins": PLUGINS.replace('name = "fresh_init"', 'name = "reinit"')}, [],
     "plugins: myplugins.FreshInit: the name 'reinit' is taken by lth.arms.reinit.Reinit"),
    ({"myplugins": "import nonexistent_package\n"}, [],
     "plugins: myplugins could not be imported (ModuleNotFoundError: No module named 'nonexistent_package')"),
    ({"myplugins": PLUGINS}, ["--pack=4"], "pack: mymodels:SmallCNN is not written in lth's packing convention"),
    ({"myplugins": PLUGINS}, ["--model.name=mymodels:Nothing"], "model.name: mymodels has no callable 'Nothing'"),
    ({"myplugins": PLUGINS}, ["--model.kwargs={depth: 3}"], "could not be built (TypeError: "),
], ids=["a name clash", "an import error", "packing a plain module", "no such callable", "a wrong keyword"])
def test_a_plugin_or_model_that_cannot_be_used_is_one_line_exit_2(tmp_path, modules, extra, message):
    _write(tmp_path, mymodels=MODEL, **modules)
    done = _lth(["run", QUICKSTART, *_tiny(tmp_path, *extra)], tmp_path)
    assert done.returncode == 2 and _said(done.stderr) == [_said(done.stderr)[0]] and message in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


# The tiny experiment with its model as a section, so that `--model.weights` can join it.
BASE = [*(a for a in TINY if not a.startswith("--model=")), "--model.name=mnist1d_mlp"]


def _trained_weights(tmp_path) -> dict:
    """A dense network trained once (the tiny run's level 0), as a plain state dict: the "pretrained" weights."""
    assert cli.main(["run", QUICKSTART, *BASE, "--prune.levels=0", f"--out_dir={tmp_path / 'dense'}", "--name=dense"]) == 0
    run_dir = config.load(None, [*BASE, f"--out_dir={tmp_path / 'dense'}", "--name=dense"]).run_dir()
    state = torch.load(run_dir / "level_00" / "ticket" / "final.ckpt", weights_only=False)["state_dict"]
    return {k[len("model."):]: v for k, v in state.items() if k.startswith("model.") and not k.endswith("_mask")}


def test_pretrained_weights_are_the_dense_start_and_the_rewind_point_and_fresh_arms_draw_their_own(tmp_path):
    """Chen et al. (2020): IMP from pre-trained weights rewinds to them; reinit still draws the model's own init."""
    from safetensors.torch import save_file

    weights = _trained_weights(tmp_path)
    save_file(weights, tmp_path / "dense.safetensors")
    args = [*BASE, "--prune.levels=1", "--prune.rewind=0", "--arms=[ticket,reinit]", "--model.weights=" + str(tmp_path / "dense.safetensors"),
            f"--out_dir={tmp_path / 'runs'}", "--name=pretrained"]
    assert cli.main(["run", QUICKSTART, *args]) == 0
    run_dir = config.load(None, args).run_dir()
    rewound = torch.load(run_dir / "rewind.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(rewound[f"model.{k}"], v) for k, v in weights.items())
    ticket = torch.load(run_dir / "level_01" / "ticket" / "start.ckpt", weights_only=False)["state_dict"]
    reinit = torch.load(run_dir / "level_01" / "reinit" / "start.ckpt", weights_only=False)["state_dict"]
    kept = ticket["model.layers.0.weight_mask"]
    assert torch.equal(ticket["model.layers.0.weight"][kept], weights["layers.0.weight"][kept])
    assert not torch.equal(reinit["model.layers.0.weight"][kept], weights["layers.0.weight"][kept])


def test_the_weights_content_not_their_path_is_part_of_the_identity(tmp_path):
    weights = _trained_weights(tmp_path)
    torch.save(weights, tmp_path / "a.pt")
    torch.save(weights, tmp_path / "b.pt")
    torch.save({k: v + 1 for k, v in weights.items()}, tmp_path / "c.pt")
    ids = {name: config.load(None, [*BASE, f"--model.weights={tmp_path / name}"]).run_id() for name in ("a.pt", "b.pt", "c.pt")}
    assert ids["a.pt"] == ids["b.pt"] != ids["c.pt"] and ids["a.pt"] != config.load(None, BASE).run_id()


@pytest.mark.parametrize("change, message", [
    (lambda w: {k: v for k, v in w.items() if k != "layers.1.bias"}, "model.weights: 1 keys missing: layers.1.bias"),
    (lambda w: {**w, "extra.weight": torch.zeros(3)}, "model.weights: 1 keys unexpected: extra.weight"),
    (lambda w: {**w, "layers.0.bias": torch.zeros(7)}, "model.weights: 1 keys of another shape: layers.0.bias (7,) for ("),
], ids=["missing", "unexpected", "mis-shaped"])
def test_weights_that_do_not_fit_are_one_line_exit_2_before_any_work(tmp_path, capsys, change, message):
    from lth.architecture import Architecture

    spec = config.dataset(config.load(None, BASE).data)
    weights = Architecture("mnist1d_mlp", tuple(spec.input_shape), spec.num_classes).build().state_dict()
    torch.save(change(weights), tmp_path / "w.pt")
    assert cli.main(["run", QUICKSTART, *BASE, f"--model.weights={tmp_path / 'w.pt'}", f"--out_dir={tmp_path / 'runs'}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("lth: error: ") and message in line
    assert not (tmp_path / "runs").exists()


def test_a_plugin_arm_edited_since_its_levels_were_recorded_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """Arms are not part of a run's identity (a run gains arms), so each line of a user's arm carries its code's digest."""
    _write(tmp_path, myplugins=PLUGINS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "myplugins", raising=False)
    args = ["run", QUICKSTART, *TINY, "--plugins=[myplugins]", "--arms=[ticket,fresh_init]", "--prune.levels=1", f"--out_dir={tmp_path / 'runs'}"]
    assert cli.main(args) == 0
    from lth import plugins

    (tmp_path / "myplugins.py").write_text(PLUGINS.replace("reinit under another name", "reinit, renamed"))
    plugins._digest.cache_clear()  # a new process reads the file anew; this one cached it
    capsys.readouterr()
    assert cli.main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "the code of the arm fresh_init changed since its level 1 was recorded" in line


def test_a_model_with_no_source_file_is_refused_in_one_line(tmp_path, monkeypatch):
    """A notebook's class has no file whose digest could identify it: refused rather than trusted by name."""
    import types

    notebook = types.ModuleType("notebook_cell")
    exec(MODEL, notebook.__dict__)
    monkeypatch.setitem(sys.modules, "notebook_cell", notebook)
    with pytest.raises(config.ConfigError, match="notebook_cell: code with no source file .* cannot be identified"):
        config.load(None, [*BASE[:-1], "--model.name=notebook_cell:SmallCNN"])


@pytest.mark.parametrize("returned", ["{'logits': out}", "(out, None)", "types.SimpleNamespace(logits=out)"], ids=["a dict", "a tuple", "a ModelOutput"])
def test_a_model_that_returns_its_logits_inside_an_output_trains_and_prunes_at_initialisation(tmp_path, monkeypatch, returned):
    """Hugging Face models return a ModelOutput, many users' modules a dict or a tuple: lth reads their logits, in
    training, evaluation and the criteria that run the network (SNIP here)."""
    wrapped = MODEL.replace("from torch import nn", "import types\nfrom torch import nn").replace(
        "        return self.head(self.features(x.view(len(x), self.channels, -1)).flatten(1))",
        f"        out = self.head(self.features(x.view(len(x), self.channels, -1)).flatten(1))\n        return {returned}")
    _write(tmp_path, outputs=wrapped)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "outputs", raising=False)
    args = [*BASE[:-1], "--model.name=outputs:SmallCNN", "--prune.method=snip", "--prune.schedule=oneshot", "--prune.oneshot.target=0.3",
            "--prune.levels=1", "--prune.rewind=0", f"--out_dir={tmp_path / 'runs'}"]
    assert cli.main(["run", QUICKSTART, *args]) == 0
    rows = {r.level: r for r in Run.open(config.load(QUICKSTART, args), progress=False).dir.rows()}
    assert rows[1].weights_remaining == pytest.approx(0.3, abs=0.01) and 0 < rows[1].test_acc <= 1

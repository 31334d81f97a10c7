"""Sweep files, checked with W&B's own sweep engine and run with the arguments `wandb agent` builds."""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import here
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from lth import cli, config, stability, sweep

SWEEPS = sorted(Path("sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_is_a_valid_grid_whose_points_are_valid_experiments(path, fake_imagenet):
    spec = sweep.load(path)  # schema_violations_from_proposed_config: none
    points = sweep.grid(spec)
    sizes = [len(p["values"]) if "values" in p else 1 for p in spec["parameters"].values()]
    assert len(points) == __import__("math").prod(sizes) and len({json.dumps(p, sort_keys=True) for p in points}) == len(points)
    if "arms" in spec["parameters"]:
        arms = [p["arms"]["value"] for p in points]
        assert arms == sorted(arms, key=lambda a: a != "ticket")  # every ticket point is handed out before any control
    for point in points:
        argv = sweep.command(spec, point)
        images = here(argv[2], fake_imagenet)
        assert argv[:2] in (["lth", "run"], ["lth", "stability"]) and Path(argv[2]).is_file()
        assert argv[3:] == create_sweep_command_args({"args": point})["args"]  # exactly what the agent passes
        if argv[1] == "stability":
            own, overrides = stability.arguments(argv[3:])
            (cfg, *_) = config.load_seeds(argv[2], overrides + images)
            assert stability.points(cfg, own["rewind"], own["levels"], own["alphas"])
            assert [str(k) for k in own["rewind"]] == [str(point["rewind"]["value"])]
        else:
            (cfg, *_) = config.load_seeds(argv[2], argv[3:] + images)
            assert "arms" not in point or cfg.arms == [point["arms"]["value"]]
        assert cfg.seed == point["seed"]["value"]


@pytest.mark.slow
def test_grid_points_run_as_the_agent_launches_them(tiny, tmp_path, capsys):
    spec = sweep.load("sweeps/quickstart.yaml")
    small = [a for a in tiny if not a.startswith(("--arms=", "--seed="))] + ["--prune.levels=1"]  # the point's own
    for point in sweep.grid(spec):
        assert cli.main(sweep.command(spec, point)[1:] + small) == 0
    for seed in (0, 1):
        run_dir = config.load(None, tiny + [f"--seed={seed}"]).run_dir()
        rows = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
        assert [(r["level"], r["arm"]) for r in rows] == [(0, "ticket"), (1, "ticket"), (1, "reinit"), (1, "signs"), (1, "shuffle")]
    assert "8 grid points" in (capsys.readouterr(), cli.main(["sweep", "sweeps/quickstart.yaml"]), capsys.readouterr().out)[2]


def test_the_printed_commands_paste_into_a_shell_as_they_are(tmp_path, capsys):
    """A list value (`--arms=['ticket', 'reinit']`) once printed unquoted, and pasted it was refused."""
    path = tmp_path / "lists.yaml"
    path.write_text("program: lth\nmethod: grid\ncommand: [lth, run, experiments/quickstart.yaml, \"${args}\"]\n"
                    "parameters:\n  arms:\n    values: [[ticket, reinit], [ticket, signs]]\n")
    assert cli.main(["sweep", str(path)]) == 0
    printed = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if re.match(r"\d+: ", line)]
    assert len(printed) == 2
    for line, arms in zip(printed, (["ticket", "reinit"], ["ticket", "signs"])):
        argv = shlex.split(line)  # what a shell hands the program
        assert argv[:3] == ["lth", "run", "experiments/quickstart.yaml"] and config.load_seeds(argv[2], argv[3:])[0].arms == arms


@pytest.mark.parametrize(
    "change, message",
    [
        ({"method": "random"}, "only a grid can be split"),
        ({"method": "sideways"}, "not a valid W&B sweep"),
        ({"parameters": {"seed": {"values": "0"}}}, "not a valid W&B sweep"),
    ],
)
def test_bad_sweeps_are_refused_in_one_line(tmp_path, capsys, change, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(yaml.safe_load(Path("sweeps/quickstart.yaml").read_text()) | change))
    assert cli.main(["sweep", str(bad), "--index", "0"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_an_index_outside_the_grid_is_refused(capsys):
    assert cli.main(["sweep", "sweeps/quickstart.yaml", "--index", "8"]) == 2
    assert "outside the grid of sweeps/quickstart.yaml (0 to 7)" in capsys.readouterr().err


def test_without_the_sweep_engine_lth_sweep_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "sweeps", None)  # as if `sweeps` were not installed
    assert cli.main(["sweep", "sweeps/quickstart.yaml"]) == 2
    assert "pip install -e '.[sweep]'" in capsys.readouterr().err

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
        agent = create_sweep_command_args({"args": point})["args"]
        assert argv[len(argv) - len(agent):] == agent  # exactly what the agent passes, after any fixed overrides of the sweep's own
        if argv[1] == "stability":
            own, overrides = stability.arguments(argv[3:])
            (cfg, *_) = config.load_seeds(argv[2], overrides + images)
            assert stability.points(cfg, own["rewind"], own["levels"], own["alphas"])
            assert [str(k) for k in own["rewind"]] == [str(point["rewind"]["value"])]
        else:
            (cfg, *_) = config.load_seeds(argv[2], argv[3:] + images)
            assert "arms" not in point or cfg.arms == [point["arms"]["value"]]
        assert "seed" not in point or cfg.seed == point["seed"]["value"]


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
                    "parameters:\n  arms:\n    values: [[ticket, reinit], [ticket, signs]]\n"
                    "  prune.layer_fractions:\n    values: [{}, {'layers.0.weight': 0.5}]\n")
    assert cli.main(["sweep", str(path)]) == 0
    printed = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if re.match(r"\d+: ", line)]
    assert len(printed) == 4
    expected = [(arms, point) for arms in (["ticket", "reinit"], ["ticket", "signs"])
                for point in ("prune.layer_fractions={}", "prune.layer_fractions={layers.0.weight:0.5}")]
    for line, (arms, point) in zip(printed, expected):
        argv = shlex.split(line)  # what a shell hands the program
        cfg = config.load_seeds(argv[2], argv[3:])[0]
        assert argv[:3] == ["lth", "run", "experiments/quickstart.yaml"] and cfg.arms == arms and cfg.point == point


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


REWIND = """program: lth
method: grid
command: [lth, run, experiments/quickstart.yaml, "${args}"]
parameters:
  arms:
    values: [ticket, reinit]
  prune.rewind:
    values: ["0", 7it]
  seed:
    values: [0]
  train.threads:
    values: [1]
"""


def test_point_names_are_the_settings_that_vary_and_change_the_experiment():
    """Seeds pool into one point; `arms` (a control follows its ticket in one run directory) and settings outside a
    run's identity (`train.threads`) do not make another point; a setting with one value is said once, not per point."""
    spec = {"parameters": {"arms": {"values": ["ticket", "reinit"]}, "prune.rewind": {"values": ["0", "500it"]},
                           "prune.fraction": {"values": [0.2, 0.5]}, "seed": {"values": [0, 1]}, "train.threads": {"values": [1, 2]},
                           "train.lr": {"value": 0.1}, "prune.layer_fractions": {"values": [{}, {"layers.0.weight": 0.5}]}}}
    points = [{key: {"value": value} for key, value in p.items()}
              for p in ({"arms": a, "prune.rewind": r, "prune.fraction": f, "seed": s, "train.threads": t, "train.lr": 0.1, "prune.layer_fractions": lf}
                        for a in ("ticket", "reinit") for r in ("0", "500it") for f in (0.2, 0.5) for s in (0, 1) for t in (1, 2)
                        for lf in ({}, {"layers.0.weight": 0.5}))]
    names = sweep.point_names(spec, points)
    assert names[0] == "prune.rewind=0,prune.fraction=0.2,prune.layer_fractions={}"
    assert names[1] == "prune.rewind=0,prune.fraction=0.2,prune.layer_fractions={layers.0.weight:0.5}"
    assert len(set(names)) == 8  # 2 rewinds × 2 fractions × 2 layer fractions; arms, seeds and threads share them
    assert sweep.point_names({"parameters": {"seed": {"values": [0, 1]}}}, [{"seed": {"value": 0}}, {"seed": {"value": 1}}]) == ["", ""]


@pytest.mark.slow
def test_sweep_run_runs_every_point_once_and_finishes_the_rest_after_a_kill(tmp_path, monkeypatch):
    """`lth sweep FILE --run`, stopped by SIGTERM while its second point trains, then run again: every point's run
    folder (under its point's name) holds each (level, arm) once, and the point finished before the kill trains
    nothing the second time (grid order: both tickets, then both controls, each following its ticket's folder)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import TINY

    (tmp_path / "rewind.yaml").write_text(REWIND)
    small = [a for a in TINY if not a.startswith(("--arms=", "--seed=", "--prune.rewind="))] + ["--prune.levels=1", f"--out_dir={tmp_path / 'runs'}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    argv = [sys.executable, "-m", "lth.cli", "sweep", str(tmp_path / "rewind.yaml"), "--run", *small]
    log = tmp_path / "first.log"
    with log.open("w") as err:
        first = subprocess.Popen(argv, env=env, stderr=err, stdout=subprocess.DEVNULL, cwd=Path.cwd())
        deadline = time.monotonic() + 240
        while "sweep point 1/3 (prune.rewind=7it" not in log.read_text() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # into the second point's run
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 143, log.read_text()[-2000:]
    assert "sweep point 0/3 (prune.rewind=0, seed 0, arms ticket): lth run experiments/quickstart.yaml --arms=ticket" in log.read_text()
    assert "run the same command again to finish the sweep" in log.read_text()
    runs = tmp_path / "runs" / "quickstart"
    (done,) = (runs / "prune.rewind=0").glob("*/results.jsonl")
    before = done.read_text()
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, cwd=Path.cwd())
    assert again.returncode == 0, again.stderr[-2000:]
    assert done.read_text().startswith(before) and "level 0/1 ticket: done earlier" in again.stderr  # its lines kept, none trained again
    for point in ("prune.rewind=0", "prune.rewind=7it"):
        (ledger,) = (runs / point).glob("*/results.jsonl")
        rows = [json.loads(line) for line in ledger.read_text().splitlines()]
        assert sorted((r["level"], r["arm"]) for r in rows) == [(0, "ticket"), (1, "reinit"), (1, "ticket")]
        assert {r["rewind_step"] for r in rows} == {0 if point.endswith("=0") else 7}
    assert (runs / "prune.rewind=7it" / "report" / "report.md").is_file() and (runs / "prune.rewind=0" / "report" / "report.md").is_file()
    # The sweep file names its points' run directories: one comparison of both (`lth.compare`).
    report = subprocess.run([sys.executable, "-m", "lth.cli", "report", str(tmp_path / "rewind.yaml"), *small, "--out", str(tmp_path / "compared")],
                            env=env, capture_output=True, text=True, timeout=120, cwd=Path.cwd())
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "compared" / "report.md").read_text()
    assert "| 0 | `0` | 1 |" in text and "| 1 | `7it` | 1 |" in text and "- `train.threads`" not in text

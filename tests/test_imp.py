"""Whole runs: levels, results on disk, resume after SIGKILL."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import result_rows, without_timing

from lth import cli, config
from lth import masks as M


def test_three_levels_on_synthetic_data(tiny, capsys):
    assert cli.main(["run", "-"] + tiny) == 2  # no such config file
    assert cli.main(["run", "experiments/quickstart.yaml"] + tiny) == 0
    cfg = config.load("experiments/quickstart.yaml", tiny)
    run_dir = cfg.run_dir()
    rows = without_timing(result_rows(run_dir))
    assert [r["level"] for r in rows] == [0, 1, 2] and {r["arm"] for r in rows} == {"ticket"}
    for r in rows:
        assert set(r) >= {"level", "arm", "weights_remaining", "test_acc", "best_val_acc", "early_stop_step", "mask_sha256", "seed"}
        assert 0 < r["test_acc"] <= 1 and 0 < r["best_val_acc"] <= 1
        assert r["early_stop_step"] % 5 == 0 or r["early_stop_step"] == 36
    assert rows[0]["test_acc"] > 0.5, "the dense net should learn the synthetic task (chance is 0.25)"

    # The masks on disk are nested, hash to the recorded values and remove half of the remaining weights.
    previous = None
    for r in rows[1:]:
        masks = torch.load(run_dir / f"level_{r['level']:02d}" / "mask.pt")
        assert M.sha256(masks) == r["mask_sha256"]
        kept = sum(int(m.sum()) for m in masks.values())
        total = sum(m.numel() for m in masks.values())
        assert abs(kept - 0.5 ** r["level"] * total) <= 1
        assert abs(r["weights_remaining"] - kept / total) < 1e-12
        if previous is not None:
            assert all(not (masks[n] & ~previous[n]).any() for n in masks)
        previous = masks
    assert rows[0]["steps_trained"] == 36 and rows[1]["steps_trained"] == 36 - 7

    out = capsys.readouterr()
    assert "weights remaining" in out.out and "level 2/2" in out.err

    # Finished work is never redone: a rerun trains nothing and leaves every file as it was.
    stamps = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.parent.name != "locks"}
    assert cli.main(["run", "experiments/quickstart.yaml"] + tiny) == 0
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file() and p.parent.name != "locks"} == stamps
    assert "done earlier" in capsys.readouterr().err

    # Raising `levels` continues the same run.
    assert cli.main(["run", "experiments/quickstart.yaml"] + tiny + ["--prune.levels=3"]) == 0
    assert without_timing(result_rows(run_dir))[:3] == rows and len(result_rows(run_dir)) == 4


def _lth(tmp_path, point, args):
    kill = [] if point is None else [str(Path(__file__).with_name("kill_at.py")), point]
    command = [sys.executable] + (kill or ["-m", "lth.cli"]) + args
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint_every", ["5it", "15it"], ids=["at-every-evaluation", "every-third-evaluation"])
def test_sigkill_anywhere_then_rerun_gives_identical_results(tiny, tmp_path, checkpoint_every):
    """With checkpoints rarer than evaluations, a rerun also replays the evaluations since the last checkpoint."""
    tiny = tiny[:-2] + [f"--train.checkpoint_every={checkpoint_every}"] + tiny[-2:]
    args = ["run", str(Path("experiments/quickstart.yaml").resolve())] + tiny
    reference = tmp_path / "reference"
    assert cli.main(args[:-2] + [f"--out_dir={reference}", "--name=tiny"]) == 0
    expected = without_timing(result_rows(config.load("experiments/quickstart.yaml", tiny[:-2] + [f"--out_dir={reference}", "--name=tiny"]).run_dir()))

    run_dir = config.load("experiments/quickstart.yaml", tiny).run_dir()
    # Before the rewind point and the first checkpoint; mid-epoch after a checkpoint; between levels;
    # mid-level after the rewind. With rarer checkpoints, the two kills that leave evaluations to replay.
    for point in ["0:4", "0:23", "0:recorded", "1:18"] if checkpoint_every == "5it" else ["0:23", "1:18"]:
        killed = _lth(tmp_path, point, args)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    finished = _lth(tmp_path, None, args)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert without_timing(result_rows(run_dir)) == expected

"""Early-bird tickets (You et al. 2020): the mask distance by hand, the dense run ended where its masks settle and
the steps it saved stated, each seed deciding alone, and a run stopped mid-watch resumed with its distances."""

import signal

import pytest
import torch
from conftest import result_rows, signal_after_step, without_timing

from lth import cli, config
from lth.preemption import REQUEUE
from lth.run_dir import FINAL, RunDir
from lth.schedules.earlybird import Params, distance, drawn

# The tiny run evaluates every 5 steps of 36; with ε = 1 every distance is below it, so a window of 2 is full at the
# third evaluation (the first has no predecessor): step 15, past the rewind step 7.
EARLYBIRD = ["--prune.schedule=earlybird", "--prune.earlybird.target=0.3", "--prune.levels=1", "--prune.earlybird.window=2"]


def test_the_distance_counts_flipped_weights_or_channels():
    a = {"w": torch.tensor([[True, True], [False, False], [True, False]])}
    b = {"w": torch.tensor([[True, False], [False, True], [True, False]])}
    assert distance(a, b, channels=False) == pytest.approx(2 / 6)
    assert distance(a, b, channels=True) == pytest.approx(1 / 3)  # channel 1 came alive; channels 0 and 2 kept weights


def test_a_mask_has_settled_when_the_whole_window_lies_below_epsilon():
    params = Params(target=0.5, epsilon=0.1, window=3)
    assert not drawn([0.05, 0.05], params)  # the window is not full yet
    assert not drawn([0.01, 0.2, 0.05, 0.05], params)
    assert drawn([0.3, 0.05, 0.05, 0.09], params)


def test_the_dense_run_ends_where_its_masks_settle_and_says_what_it_saved(tiny, tmp_path, capsys):
    args = tiny + EARLYBIRD + ["--prune.earlybird.epsilon=1", "--arms=[ticket,reinit]"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    said = capsys.readouterr()
    run_dir = RunDir(config.load(None, args).run_dir())
    rows = {(r.level, r.arm): r for r in run_dir.rows()}
    dense = rows[0, "ticket"]
    assert dense.steps_trained == 15 and dense.ended_early.endswith("ended at step 15 of 36, 58% of the dense run's steps saved")
    assert run_dir.load(run_dir.arm(0, "ticket") / FINAL)["global_step"] == 15
    assert rows[1, "ticket"].ended_early is None and rows[1, "ticket"].steps_trained == 36 - 7  # the pruned level trains to its end
    assert rows[1, "ticket"].weights_remaining == pytest.approx(0.3, abs=0.01)
    report = (tmp_path / "runs" / "tiny" / "report" / "report.md").read_text()
    assert f"- seed 0 ticket at level 0: {dense.ended_early}" in report and dense.ended_early in said.out + said.err
    # With an ε no distance meets, it trains to its end.
    strict = tiny + EARLYBIRD + ["--prune.earlybird.epsilon=0.000001", "--arms=[ticket]", "--name=strict"]
    assert cli.main(["run", "experiments/quickstart.yaml", *strict]) == 0
    (dense,) = [r for r in result_rows(config.load(None, strict).run_dir()) if r["level"] == 0]
    assert dense["steps_trained"] == 36 and dense["ended_early"] is None


def test_each_seed_s_dense_run_decides_alone(tiny, tmp_path):
    """Seeds pack together (one network trains them in lockstep); a pack ends as one, so dense runs a hook may end
    train alone: each seed's dense line is the one it gives run by itself (its pruned level packs with the other
    seed's, and packing rounds differently)."""
    args = tiny + EARLYBIRD + ["--prune.earlybird.epsilon=0.2", "--prune.earlybird.window=1", "--arms=[ticket]"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args, "--seed=[0,1]"]) == 0
    for seed in (0, 1):
        alone = [*args, f"--seed={seed}", f"--out_dir={tmp_path / f'alone{seed}'}"]
        assert cli.main(["run", "experiments/quickstart.yaml", *alone]) == 0
        together = config.load(None, [*args, f"--seed={seed}"]).run_dir()
        dense = [without_timing([r for r in result_rows(d) if r["level"] == 0]) for d in (together, config.load(None, alone).run_dir())]
        assert dense[0] == dense[1] and dense[0][0]["ended_early"]


@pytest.mark.slow
@pytest.mark.parametrize("level, at", [(0, 11), (1, 11)])
def test_a_run_stopped_while_watching_or_after_the_dense_run_ended_resumes_to_the_same_lines(tiny, tmp_path, monkeypatch, level, at):
    """Stopped at step 12 of the dense run, it resumes from its checkpoint at step 10 holding the distance measured
    there: without it the window would fill two evaluations later and the dense run end at step 25, not 15.
    Stopped at step 12 of the pruned level, after the dense run ended, it keeps that dense run as it ended."""
    args = tiny + EARLYBIRD + ["--prune.earlybird.epsilon=1", "--arms=[ticket]", "--train.checkpoint_every=5it"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args, f"--out_dir={tmp_path / 'reference'}"]) == 0
    expected = result_rows(config.load(None, [*args, f"--out_dir={tmp_path / 'reference'}"]).run_dir())
    undo = signal_after_step(monkeypatch, lambda member, step: member.level == level and step == at)  # the step counted after it is at + 1
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == REQUEUE
    undo()
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    got = result_rows(config.load(None, args).run_dir())
    assert [r["steps_trained"] for r in got if r["level"] == 0] == [15]
    assert without_timing(got) == without_timing(expected)


@pytest.mark.parametrize("extra, message", [
    (["--prune.earlybird.epsilon=0"], "prune.earlybird.epsilon: must lie in (0, 1]"),
    (["--prune.earlybird.window=0"], "prune.earlybird.window: must be at least 1"),
    (["--prune.levels=2"], "prune.levels: the earlybird schedule has one pruned level"),
])
def test_bad_early_bird_settings_stop_before_any_work(tiny, tmp_path, capsys, extra, message):
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, *EARLYBIRD, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()

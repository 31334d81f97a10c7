"""Invariants every schedule, method and arm keeps, guarded across the registries rather than plugin by plugin
(issue 31): pruned weights are exactly 0 in every checkpoint, also mid-training; fresh initialisations differ across
levels and seeds; the early-stopping step has the lowest validation loss; matching sparsity counts its boundary.
(The data order of a resumed epoch: tests/test_data.py. Every run any test leaves is also checked afterwards:
conftest's `every_run_keeps_pruned_weights_at_zero`.)"""

import pytest
import torch
from conftest import EVERY_ARM, pruned_weights_problems

from lth import cli, config, report
from lth.imp import early_stop
from lth.report import Cell, Stat
from lth.run_dir import FINAL, START, RunDir
from lth.schedules import SCHEDULES

RUN = ["run", "experiments/quickstart.yaml"]
# Each registered schedule's settings for a tiny run: a schedule added without an entry here fails the test below.
SCHEDULE_ARGS = {
    "iterative": ["--prune.levels=2"],
    "oneshot": ["--prune.schedule=oneshot", "--prune.oneshot.target=0.3", "--prune.levels=1"],
    "gradual": ["--prune.schedule=gradual", "--prune.target=0.2", "--prune.levels=1", "--prune.begin_step=10", "--prune.end_step=30",
                "--prune.frequency=5"],
    # ε = 1: every distance is below it, so the dense run ends early, at its third evaluation.
    "earlybird": ["--prune.schedule=earlybird", "--prune.earlybird.target=0.3", "--prune.levels=1", "--prune.earlybird.epsilon=1",
                  "--prune.earlybird.window=2"],
}


def _violations(state: dict) -> list[str]:
    masks = {k[: -len("_mask")]: m for k, m in state.items() if k.endswith("_mask")}
    return [k for k, m in masks.items() if state[k].shape == m.shape and (state[k][~m] != 0).any()]


@pytest.mark.slow
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_pruned_weights_are_zero_in_every_checkpoint_of_every_arm_under_every_schedule(tiny, schedule, monkeypatch):
    """Every checkpoint as it is written, last.ckpt mid-training included (the gradual ticket prunes as it trains),
    and each results line's weights_remaining against the nonzero weights of its final.ckpt."""
    assert set(SCHEDULE_ARGS) == set(SCHEDULES), "give every registered schedule its settings here"
    written, save = [], RunDir.save

    def checked(obj, path):
        if isinstance(obj, dict) and "state_dict" in obj:
            written.append((path.name, _violations(obj["state_dict"])))
        save(obj, path)

    monkeypatch.setattr(RunDir, "save", staticmethod(checked))
    args = [*tiny, *SCHEDULE_ARGS[schedule], EVERY_ARM, "--train.checkpoint_every=5it"]
    assert cli.main([*RUN, *args]) == 0
    assert {name for name, _ in written} >= {"last.ckpt", FINAL, START, "rewind.ckpt"}
    assert [(name, bad) for name, bad in written if bad] == []
    run_dir = config.load(None, args).run_dir()
    assert len(RunDir(run_dir).rows()) == 1 + 6 * (2 if schedule == "iterative" else 1)
    assert pruned_weights_problems(run_dir) == []


def test_the_check_sees_a_pruned_weight_that_is_not_zero(tiny):
    """The invariant's check itself: one revived weight in one final.ckpt is found, and so is a wrong weights_remaining."""
    assert cli.main([*RUN, *tiny, "--prune.levels=1"]) == 0
    run_dir = config.load(None, tiny).run_dir()
    path = run_dir / "level_01" / "ticket" / FINAL
    checkpoint = torch.load(path, weights_only=False)
    state = checkpoint["state_dict"]
    name = next(k for k in state if k.endswith("_mask"))[: -len("_mask")]
    state[name][~state[name + "_mask"]] = 1e-3
    torch.save(checkpoint, path)
    problems = pruned_weights_problems(run_dir)
    assert any(f"pruned weights of {name} are not 0" in p for p in problems) and any("nonzero, its line says" in p for p in problems)
    path.unlink()  # the test leaves no broken run for the after-test check


@pytest.mark.slow
def test_fresh_initialisations_differ_across_levels_and_seeds(tiny):
    """reinit draws a new init at every level and for every seed, where the ticket rewinds to the same weights: compared
    on the weights kept at both levels."""
    args = [*tiny, "--arms=[ticket,reinit]", "--seed=[0,1]"]
    assert cli.main([*RUN, *args]) == 0
    starts = {}
    for seed in (0, 1):
        run_dir = RunDir(config.load(None, [*tiny, f"--seed={seed}"]).run_dir())
        init_seeds = {r.level: r.init_seed for r in run_dir.rows() if r.arm == "reinit"}
        assert len(set(init_seeds.values())) == len(init_seeds) == 2
        for level in (1, 2):
            for arm in ("ticket", "reinit"):
                state = torch.load(run_dir.arm(level, arm) / START, weights_only=False)["state_dict"]
                starts[seed, level, arm] = state["model.layers.0.weight"], state["model.layers.0.weight_mask"]
    for seed in (0, 1):
        both = starts[seed, 2, "ticket"][1]  # kept at level 2, so at level 1 too
        ticket = [starts[seed, level, "ticket"][0][both] for level in (1, 2)]
        reinit = [starts[seed, level, "reinit"][0][both] for level in (1, 2)]
        assert torch.equal(*ticket), "the ticket rewinds to one init: the comparison can see equality"
        assert not torch.equal(*reinit) and not torch.equal(reinit[0], ticket[0])
    shared = starts[0, 1, "reinit"][1] & starts[1, 1, "reinit"][1]
    assert not torch.equal(starts[0, 1, "reinit"][0][shared], starts[1, 1, "reinit"][0][shared])


def test_the_early_stopping_step_has_the_lowest_validation_loss(tiny):
    assert cli.main([*RUN, *tiny, "--prune.levels=1", "--arms=[ticket,reinit]"]) == 0
    run_dir = RunDir(config.load(None, tiny).run_dir())
    for row in run_dir.rows():
        history = torch.load(run_dir.arm(row.level, row.arm) / FINAL, weights_only=False)["lth"]["val_history"]  # a single run's
        lowest = min(h["val_loss"] for h in history)
        chosen = next(h for h in history if h["step"] == row.early_stop_step)
        assert chosen["val_loss"] == lowest, (row.level, row.arm)
        assert all(h["val_loss"] > lowest for h in history if h["step"] < chosen["step"]), "the earliest of equal losses"
        assert row.test_acc_at_early_stop == chosen["test_acc"] and row.early_stop_val_acc == chosen["val_acc"]
        assert len({h["val_loss"] for h in history}) > 1, "a history of one loss would choose any step"
    ties = [{"step": 5, "val_loss": 0.7}, {"step": 10, "val_loss": 0.5}, {"step": 15, "val_loss": 0.5}, {"step": 20, "val_loss": 0.6}]
    assert early_stop(ties)["step"] == 10 and early_stop(ties[::-1])["step"] == 10


def test_matching_sparsity_counts_an_accuracy_at_its_threshold_and_not_below():
    """Matching: mean at least the dense mean minus its std (Renda et al. 2020). Values exact in binary, so that
    the boundary is the boundary."""
    def cell(remaining: float, *accs: float) -> Cell:
        return Cell(remaining, Stat.of(list(accs)), Stat.of(list(accs)), Stat.of([0.0] * len(accs)))

    dense = cell(1.0, 0.75, 0.25)  # mean 0.5, std 0.3535...: the threshold is 0.5 - std
    threshold = 0.5 - dense.test_acc_at_early_stop.std
    below = threshold - 2**-40
    cells = {("ticket", 0): dense, ("ticket", 1): cell(0.5, threshold, threshold), ("ticket", 2): cell(0.25, below, below),
             ("reinit", 1): cell(0.5, below, below)}
    assert report.matching_sparsity(cells, "ticket") == 0.5
    assert report.matching_sparsity(cells, "reinit") is None

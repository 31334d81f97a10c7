"""Divergence is not a result: the (level, arm) that diverges leaves a note instead of a results line, the rest
trains on, the report lists it and shows no cell for it, and the command exits 4."""

import math
import os

import pytest
import torch
from conftest import result_rows

from lth import cli, config, imp
from lth.module import DIVERGED, MaskedModule
from lth.run_dir import RunDir

RUN = ["run", "experiments/quickstart.yaml"]


def test_a_loss_far_above_a_uniform_guess_or_a_weight_not_finite_is_divergence(tiny):
    module = imp.Run.open(config.load(None, tiny), progress=False).build_module(0, pack=3)
    ln = math.log(4)
    assert module.diverged([1.2, 3.0 * ln, 0.9]) == {}  # overfitting is not divergence
    assert set(module.diverged([1.2, 1e18, float("nan")])) == {1, 2}
    with torch.no_grad():
        module.model.layers[0].weight.view(3, -1)[2, 0] = float("inf")  # the third member's
    assert module.diverged([1.0, 1.0, 1.0]) == {2: "a weight is not finite"}
    assert DIVERGED * ln < 1e18


def test_sgd_at_a_huge_learning_rate_diverges_in_one_line_and_records_nothing(tiny, capsys):
    args = [*tiny, "--train.lr=1e6", "--prune.levels=1", "--arms=[ticket,reinit]"]
    assert cli.main([*RUN, *args]) == cli.DIVERGED
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lth:")]
    assert err[0].startswith("lth: seed 0 ticket at level 0 diverged at step 5 (")
    assert err[1] == "lth: seed 0 ticket at level 1: not trained, as the ticket's level 0 diverged"
    run_dir = RunDir(config.load(None, args).run_dir())
    assert run_dir.rows() == [] and run_dir.diverged(0, "ticket").exists()
    assert cli.main([*RUN, *args]) == cli.DIVERGED  # a rerun says so again, and trains nothing


@pytest.mark.slow
def test_a_control_that_diverges_in_a_pack_leaves_the_others_and_the_next_level_to_train(tiny, capsys, monkeypatch):
    """reinit of level 1 gets a NaN weight mid-training, in a pack with the ticket and random pruning."""
    step, current = MaskedModule.optimizer_step, {}
    train = imp.train_pack

    def tracked(members, *rest):
        current["arms"] = [m.arm.name for m in members]
        current["level"] = members[0].level
        return train(members, *rest)

    def poisoning(self, *a, **k):
        step(self, *a, **k)
        if current["level"] == 1 and "reinit" in current["arms"] and self.global_step == 20:
            with torch.no_grad():
                self.model.layers[0].weight.view(self.pack, -1)[current["arms"].index("reinit"), 0] = float("nan")

    monkeypatch.setattr(imp, "train_pack", tracked)
    monkeypatch.setattr(MaskedModule, "optimizer_step", poisoning)
    args = [*tiny, "--prune.levels=2", "--arms=[ticket,reinit,random_prune]", "--pack=3"]
    assert cli.main([*RUN, *args]) == cli.DIVERGED
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lth:")]
    assert err == ["lth: seed 0 reinit at level 1 diverged at step 25 (a weight is not finite); no result recorded"]
    run_dir = config.load(None, args).run_dir()
    done = {(r["level"], r["arm"]) for r in result_rows(run_dir)}
    assert done == {(0, "ticket"), (1, "ticket"), (1, "random_prune"), (2, "ticket"), (2, "reinit"), (2, "random_prune")}
    text = (run_dir.parent / "report" / "report.md").read_text()
    assert "- seed 0 reinit at level 1: step 25, a weight is not finite" in text
    assert os.path.exists(run_dir / "level_01" / "reinit" / "diverged.json")

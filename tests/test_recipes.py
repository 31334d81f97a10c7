"""The recipes transformers are trained with, each checked by hand (issue 32): AdamW's parameter groups, the cosine
rate after a linear warm-up, each packed run's gradients clipped to its own global norm, label smoothing."""

import math

import pytest
import torch
from conftest import TINY
from torch import nn
from torch.nn import functional as F

from lth import cli, config
from lth.imp import Run
from lth.module import clip_per_run, decay_groups, rate
from lth.steps import Steps

RUN = ["run", "experiments/quickstart.yaml"]


def test_adamw_decays_matrices_and_kernels_and_not_biases_norms_or_embeddings():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4), nn.Conv1d(4, 2, 3), nn.BatchNorm1d(2))
    decayed, plain = decay_groups(model, 0.01)
    assert decayed["weight_decay"] == 0.01 and plain["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[1].weight), id(model[3].weight)}
    assert {id(p) for p in plain["params"]} == {id(model[0].weight), id(model[1].bias), id(model[2].weight), id(model[2].bias), id(model[3].bias),
                                                id(model[4].weight), id(model[4].bias)}


def test_the_cosine_rate_after_a_linear_warm_up_by_hand():
    steps = Steps(steps_per_epoch=10, total_steps=110, rewind_step=0, milestone_steps=(), eval_every=10, checkpoint_every=10, val_size=1,
                  warmup_steps=10)
    train = config.TrainConfig(lr_schedule="cosine")
    assert [rate(steps, train, s) for s in (0, 5, 10)] == [0.0, 0.5, 1.0]
    assert rate(steps, train, 60) == pytest.approx(0.5) and rate(steps, train, 35) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert rate(steps, train, 110) == pytest.approx(0.0, abs=1e-12)
    stepped = config.TrainConfig(gamma=0.1)
    steps = Steps(10, 110, 0, (50, 80), 10, 10, 1, 10)
    assert [rate(steps, stepped, s) for s in (5, 49, 50, 80)] == [0.5, 1.0, pytest.approx(0.1), pytest.approx(0.01)]


def test_each_packed_run_is_clipped_to_its_own_global_norm():
    """Two runs packed along dim 0: run 0's gradient has norm 5 (clipped to 1), run 1's 0.5 (left as it is)."""
    weight, bias = torch.zeros(4, 3, requires_grad=True), torch.zeros(4, requires_grad=True)
    weight.grad = torch.tensor([[3.0, 0, 0], [0, 0, 0], [0.3, 0, 0], [0, 0, 0]])
    bias.grad = torch.tensor([0.0, 4.0, 0.0, 0.4])
    clip_per_run([weight, bias], 2, max_norm=1.0)
    run0 = torch.cat([weight.grad[:2].flatten(), bias.grad[:2]])
    run1 = torch.cat([weight.grad[2:].flatten(), bias.grad[2:]])
    assert run0.norm().item() == pytest.approx(1.0, rel=1e-5) and torch.allclose(run0, torch.tensor([3.0, 0, 0, 0, 0, 0, 0, 4.0]) / 5, atol=1e-6)
    assert torch.equal(run1, torch.tensor([0.3, 0, 0, 0, 0, 0, 0, 0.4]))


def test_label_smoothing_is_the_smoothed_cross_entropy_by_hand(tiny):
    run = Run.open(config.load(None, tiny + ["--train.label_smoothing=0.1"]), progress=False)
    module = run.build_module(0)
    x, y = torch.randn(8, *run.net.spec.input_shape), torch.randint(0, run.net.spec.num_classes, (8, 1))
    log_p = F.log_softmax(module(x)[:, 0], -1)
    by_hand = (0.9 * -log_p.gather(1, y).squeeze(1) + 0.1 * -log_p.mean(1)).mean()
    assert module.losses(x, y).item() == pytest.approx(by_hand.item(), rel=1e-5)


@pytest.mark.parametrize("recipe", [["--train.optimizer=adamw", "--train.lr=0.001", "--train.weight_decay=0.01"],
                                    ["--train.lr_schedule=cosine", "--train.warmup=5it", "--train.clip_grad_norm=0.5", "--train.label_smoothing=0.1"]],
                         ids=["adamw", "cosine-clip-smoothing"])
def test_the_recipes_train_under_masks(tiny, recipe):
    """A two-level run under each recipe: its pruned weights stay 0 (checked after the test for every run) and it records."""
    assert cli.main([*RUN, *tiny, "--prune.levels=1", *recipe]) == 0
    assert len(Run.open(config.load(None, tiny + recipe), progress=False).dir.rows()) == 2


@pytest.mark.parametrize("override, message", [
    ("--train.label_smoothing=1.0", "train.label_smoothing: must lie in [0, 1)"),
    ("--train.clip_grad_norm=0", "train.clip_grad_norm: must be positive or null"),
    ("--train.milestones=[1ep]", "train.milestones: the cosine schedule has none"),
])
def test_bad_recipe_settings_are_one_line(tiny, capsys, override, message):
    assert cli.main([*RUN, *TINY, "--train.lr_schedule=cosine", override]) == 2
    assert message in capsys.readouterr().err

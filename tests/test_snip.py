"""SNIP (Lee et al. 2019): connection sensitivity on one batch, at initialisation, under every arm."""

import dataclasses

import pytest
import torch
from conftest import prune_at_initialisation
from torch.func import functional_call
from torch.nn import functional as F

from lth import config
from lth import masks as M
from lth.imp import Run
from lth.methods import METHODS


def test_a_score_is_the_loss_derivative_with_respect_to_its_mask_at_one(tiny):
    """Lee et al.'s definition, computed independently: a multiplicative mask c on every weight, ∂L/∂c at c = 1."""
    run = Run.open(config.load(None, tiny), progress=False)
    module = run.build_module(0)
    state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    masks = M.ones_like(module.weights())
    masks["layers.0.weight"][:, :5] = False  # pruned before: its weights are 0 and score 0
    scoring = dataclasses.replace(run.scoring(state, masks, {n: 0.5 for n in masks}), rewound=lambda: state)
    scores = METHODS["snip"].scores(scoring, None)

    network = run.net.plain(state)
    ((x, y),) = run.first_batches(1)
    c = {n: torch.ones_like(m, dtype=torch.float32, requires_grad=True) for n, m in masks.items()}
    weights = {n: network.get_parameter(n).detach() * masks[n] * c[n] for n in masks}
    loss = F.cross_entropy(functional_call(network, weights, (x,)), y)
    derivative = dict(zip(c, torch.autograd.grad(loss, list(c.values()))))
    for name in masks:
        assert torch.allclose(scores[name], derivative[name].abs(), rtol=1e-4, atol=1e-8), name
    assert not scores["layers.0.weight"][:, :5].any()
    assert scores["layers.0.weight"][:, 5:].count_nonzero() > 0


@pytest.mark.slow
def test_snip_prunes_at_initialisation_and_every_arm_trains_on_its_masks(tiny):
    run, rows = prune_at_initialisation(tiny, "snip")
    assert rows["ticket"].weights_remaining == pytest.approx(0.1, abs=1e-3)
    masks = run.dir.load(run.dir.mask(1))
    # The scores of the weights level 1 rewinds to (the init, with rewind 0) and the run's first batch, not of the trained dense network.
    fractions = {n: 0.9 for n in masks}
    ones = {n: torch.ones_like(m) for n, m in masks.items()}
    at_init = run.prune(run.rewound_weights(), ones, fractions)
    assert M.sha256(at_init) == M.sha256(masks)
    trained = run.trained_weights(0, "ticket")
    magnitude = METHODS["magnitude"].scores(run.scoring(trained, ones, fractions), None)
    assert M.sha256(run.net.unit.keep(magnitude, ones, fractions, "global")) != M.sha256(masks)

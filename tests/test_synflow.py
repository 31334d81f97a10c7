"""SynFlow (Tanaka et al. 2020): data-free iterative synaptic flow, at initialisation, under every arm."""

import pytest
import torch
from conftest import prune_at_initialisation
from torch import nn

from lth import config, pruning
from lth import masks as M
from lth.imp import Run
from lth.methods import METHODS
from lth.methods.base import Scoring


def _no_data(n):
    raise AssertionError("SynFlow reads no data")


def test_scores_conserve_synaptic_flow_layer_by_layer():
    """Tanaka et al.'s Theorem 1: in a bias-free ReLU network of positive weights, each layer's scores sum to R,
    the network's output for an all-ones input."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 4, bias=False), nn.ReLU(), nn.Linear(4, 3, bias=False))
    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in state.items()}

    def holding(s):
        held = nn.Sequential(nn.Linear(6, 5, bias=False), nn.ReLU(), nn.Linear(5, 4, bias=False), nn.ReLU(), nn.Linear(4, 3, bias=False))
        held.load_state_dict({k: v for k, v in s.items() if not k.endswith("_mask")})
        return held

    scoring = Scoring(state, masks, {n: 0.5 for n in masks}, "global", {}, lambda: state, holding, _no_data, (6,))
    scores = METHODS["synflow"].scores(scoring, METHODS["synflow"].Params())
    flow = torch.ones(1, 6, dtype=torch.float64)
    for w in state.values():
        flow = flow @ w.abs().double().T
    for name, score in scores.items():
        assert score.sum().item() == pytest.approx(flow.sum().item(), rel=1e-9), name


def test_iterative_synflow_reaches_the_target_and_cuts_off_no_layer(tiny):
    """At 0.5% of LeNet-300-100's weights, under one global threshold: the target within rounding, and every layer
    keeps weights (the layer collapse that iterative rescoring avoids, Tanaka et al. 2020, §5-6)."""
    cfg = config.load(None, tiny + ["--model=lenet_300_100", "--prune.method=synflow", "--prune.synflow.rounds=20", "--prune.dense_layers=[]"])
    run = Run.open(cfg, progress=False)
    module = run.build_module(0)
    state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    run.rewound_weights = lambda: state
    run.first_batches = _no_data
    masks = M.ones_like(module.weights())
    fractions = {n: 0.995 for n in masks}
    pruned = pruning.level_masks(cfg.prune, run.net.unit, run.scoring(state, masks, fractions))
    remaining, per_layer = M.weights_remaining(pruned)
    assert remaining == pytest.approx(0.005, abs=5e-4)
    assert all(v > 0 for v in per_layer.values()), per_layer
    cfg.prune.method_params.rounds = 1  # scored once, the first layer is cut off entirely
    once = pruning.level_masks(cfg.prune, run.net.unit, run.scoring(state, masks, fractions))
    assert min(M.weights_remaining(once)[1].values()) == 0


@pytest.mark.slow
def test_synflow_prunes_at_initialisation_and_every_arm_trains_on_its_masks(tiny):
    run, rows = prune_at_initialisation(tiny, "synflow", "--prune.synflow.rounds=10")
    assert rows["ticket"].weights_remaining == pytest.approx(0.1, abs=2e-3)

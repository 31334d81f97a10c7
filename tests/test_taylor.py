"""First-order Taylor importance (Molchanov et al. 2019): |w · ∂L/∂w| with the gradient summed over n batches, a
multi-batch criterion in one file."""

import torch
from torch.func import functional_call
from torch.nn import functional as F

from lth import cli, config
from lth import masks as M
from lth.imp import Run
from lth.methods import METHODS


def test_a_score_is_the_weight_times_the_gradient_summed_over_its_batches(tiny):
    run = Run.open(config.load(None, tiny), progress=False)
    module = run.build_module(0)
    state = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
    masks = M.ones_like(module.weights())
    masks["layers.0.weight"][:, :5] = False  # pruned before: its weights are 0 and score 0
    state["layers.0.weight"][:, :5] = 0
    scoring = run.scoring(state, masks, {n: 0.5 for n in masks})
    params = METHODS["taylor"].Params(batches=3)
    scores = METHODS["taylor"].scores(scoring, params)

    batches = run.first_batches(3)
    assert len(batches) == 3 and not torch.equal(batches[0][0], batches[1][0])  # three different batches of the data order
    network = run.net.plain(state)
    weights = {n: network.get_parameter(n).detach().clone().requires_grad_(True) for n in masks}
    loss = sum(F.cross_entropy(functional_call(network, weights, (x,)), y) for x, y in batches)
    gradient = dict(zip(weights, torch.autograd.grad(loss, list(weights.values()))))
    for name in masks:
        assert torch.allclose(scores[name], (weights[name] * gradient[name]).detach().abs(), rtol=1e-4, atol=1e-8), name
    assert not scores["layers.0.weight"][:, :5].any()
    one = METHODS["taylor"].scores(scoring, METHODS["taylor"].Params(batches=1))
    assert not torch.allclose(one["layers.1.weight"], scores["layers.1.weight"])  # more batches, other scores


def test_taylor_prunes_a_run_and_checks_its_setting(tiny, capsys):
    args = tiny + ["--prune.method=taylor", "--prune.taylor.batches=2", "--prune.levels=1", "--arms=[ticket,random_prune]"]
    assert cli.main(["run", "experiments/quickstart.yaml", *args]) == 0
    rows = {(r.level, r.arm): r for r in Run.open(config.load(None, args), progress=False).dir.rows()}
    assert rows[1, "ticket"].weights_remaining_per_layer == rows[1, "random_prune"].weights_remaining_per_layer
    capsys.readouterr()
    assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--prune.method=taylor", "--prune.taylor.batches=0"]) == 2
    err = capsys.readouterr().err
    assert "prune.taylor.batches: must be at least 1, got 0" in err and err.count("\n") == 1

"""GraSP (Wang et al. 2020): −S = θ ⊙ Hg, checked against the Hessian itself, and pruning at initialisation under every arm."""

import pytest
import torch
from conftest import prune_at_initialisation
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from lth import cli
from lth.methods import METHODS
from lth.methods.base import Scoring


def _network():
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def test_a_score_is_the_weight_times_the_hessian_gradient_product():
    """On a network of 20 weights the Hessian is a 20 × 20 matrix: built whole with torch.autograd.functional.hessian
    (not GraSP's double backward), its product with the gradient summed over two batches, times the weights."""
    torch.manual_seed(0)
    network = _network()
    state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    masks = {n: torch.ones_like(state[n], dtype=torch.bool) for n in ("0.weight", "2.weight")}
    masks["0.weight"][0, :2] = False  # pruned before: it scores as the zero it is
    batches = [(torch.randn(5, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1])) for _ in range(2)]
    temperature = 3.0

    def holding(s):
        held = _network()
        held.load_state_dict({k: v * s[f"{k}_mask"] if f"{k}_mask" in s else v for k, v in s.items() if not k.endswith("_mask")})
        return held

    scoring = Scoring(state, masks, {n: 0.5 for n in masks}, "global", {}, lambda: state, holding, lambda n: batches[:n], (3,))
    scores = METHODS["grasp"].scores(scoring, METHODS["grasp"].Params(batches=2, temperature=temperature))

    names = list(masks)
    theta = {n: state[n] * masks[n] for n in names}
    sizes = [theta[n].numel() for n in names]

    def loss(flat):
        weights = {n: part.view_as(theta[n]) for n, part in zip(names, flat.split(sizes))}
        return sum(F.cross_entropy(functional_call(network, {**state, **weights}, (x,)) / temperature, y) for x, y in batches)

    flat = torch.cat([theta[n].flatten() for n in names])
    g = torch.autograd.functional.jacobian(loss, flat)
    hessian = torch.autograd.functional.hessian(loss, flat)
    expected = dict(zip(names, (flat * (hessian @ g)).split(sizes)))
    for name in names:
        assert torch.allclose(scores[name], expected[name].view_as(scores[name]), rtol=1e-6, atol=1e-12), name
    assert not scores["0.weight"][0, :2].any() and scores["2.weight"].count_nonzero() > 0
    # GraSP removes the largest S = −θ ⊙ Hg, so what it keeps scores highest in θ ⊙ Hg, not in |θ ⊙ Hg|.
    assert any((s < 0).any() for s in scores.values())


def test_grasp_s_settings_are_checked_before_any_work(tiny, capsys):
    for setting, message in (("--prune.grasp.batches=0", "prune.grasp.batches: must be at least 1"),
                             ("--prune.grasp.temperature=0", "prune.grasp.temperature: must be positive")):
        assert cli.main(["run", "experiments/quickstart.yaml", *tiny, "--prune.method=grasp", setting]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


@pytest.mark.slow
def test_grasp_prunes_at_initialisation_and_every_arm_trains_on_its_masks(tiny):
    run, rows = prune_at_initialisation(tiny, "grasp")
    assert rows["ticket"].weights_remaining == pytest.approx(0.1, abs=1e-3)
    masks = run.dir.load(run.dir.mask(1))
    ones = {n: torch.ones_like(m) for n, m in masks.items()}
    at_init = run.prune(run.rewound_weights(), ones, {n: 0.9 for n in masks})  # the init's scores on the run's first batches
    assert all(torch.equal(at_init[n], masks[n]) for n in masks)

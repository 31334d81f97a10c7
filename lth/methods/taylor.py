"""First-order Taylor importance (Molchanov et al. 2019, "Importance Estimation for Neural Network Pruning", §3,
eq. 3; Torch-Pruning's `TaylorImportance`): the loss change from removing weight j, to first order, is
|w_j · ∂L/∂w_j|, with the gradient accumulated over the run's first `batches` training batches, as Torch-Pruning
accumulates it before scoring. (Molchanov et al.'s eq. 3 squares the product, which ranks alike.) It scores the
trained network the level is pruned from, as magnitude pruning does; SNIP is the same product at the weights a
level rewinds to, on one batch."""

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from lth.inputs import call
from lth.methods.base import Method
from lth.models import logits


@dataclass
class Params:
    batches: int = 10  # the gradient's noise averages out over about a thousand examples at a batch of 100


class Taylor(Method):
    name = "taylor"
    Params = Params

    def scores(self, scoring, params):
        network = scoring.network(scoring.trained)
        weights = [network.get_parameter(n) for n in scoring.masks]
        gradient = [torch.zeros_like(w) for w in weights]
        for x, y in scoring.batches(params.batches):
            for total, part in zip(gradient, torch.autograd.grad(F.cross_entropy(logits(call(network, x)), y), weights)):
                total += part
        return {n: (w * g).detach().abs() for n, w, g in zip(scoring.masks, weights, gradient)}

    def check(self, params, strategy, shapes, fractions, unit):
        if params.batches < 1:
            return f"prune.taylor.batches: must be at least 1, got {params.batches}"
        return None

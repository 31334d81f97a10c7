"""SNIP, connection sensitivity (Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection
Sensitivity", §4.1, eq. 3-6): the weight j's score is |∂L/∂c_j| at c = 1 for a multiplicative mask c, which is
|w_j · ∂L/∂w_j|, on one mini-batch. It scores the weights the level's arms start from, so that with
`prune.rewind: "0"` and `prune.schedule: oneshot` it prunes at initialisation, as Lee et al. do, and the
ticket meets the same controls as under magnitude pruning. Lee et al. normalise the scores by their sum,
which changes no ranking."""

import torch
from torch.nn import functional as F

from lth.inputs import call
from lth.methods.base import Method
from lth.models import logits


class SNIP(Method):
    name = "snip"

    def scores(self, scoring, params):
        state = {**scoring.rewound(), **{f"{n}_mask": m for n, m in scoring.masks.items()}}
        network = scoring.network(state)
        weights = [network.get_parameter(n) for n in scoring.masks]
        ((x, y),) = scoring.batches(1)
        gradients = torch.autograd.grad(F.cross_entropy(logits(call(network, x)), y), weights)
        return {n: (w * g).detach().abs() for n, w, g in zip(scoring.masks, weights, gradients)}

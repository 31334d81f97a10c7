"""GraSP, gradient signal preservation (Wang et al. 2020, "Picking Winning Tickets Before Training by Preserving
Gradient Flow", §4, eq. 8): the score of weight j is S(−θ)_j = −θ_j (Hg)_j, where g is the loss's gradient and
H its Hessian, both with respect to the weights; the weights with the *largest* S are removed, those whose
removal reduces the gradient flow least (it may even grow). Since a method here says what is kept (higher is
kept), it returns −S = θ ⊙ Hg. Hg is one Hessian-vector product: the gradient of gᵀ∇L with g held constant.

As in the authors' code (alecwangcq/GraSP, `pruner/GraSP.py`): the logits are divided by a temperature of 200
before the loss, which keeps the softmax from saturating so that the Hessian carries signal at initialisation;
g is summed over the batches first, then Hg over the same batches; the network stays in train mode. Their
code draws 25 examples per class (250 for ten classes); lth reads the run's first `batches` training batches in
its data order, the same for every level and arm, not balanced by class. It scores the weights the level's
arms start from, so that with `prune.rewind: "0"` and `prune.schedule: oneshot` it prunes at initialisation."""

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from lth.inputs import call
from lth.methods.base import Method
from lth.models import logits


@dataclass
class Params:
    batches: int = 2  # about the authors' 250 examples at a batch of 128
    temperature: float = 200.0  # the authors' code, `T = 200`


class GraSP(Method):
    name = "grasp"
    Params = Params

    def scores(self, scoring, params):
        state = {**scoring.rewound(), **{f"{n}_mask": m for n, m in scoring.masks.items()}}
        network = scoring.network(state)
        weights = [network.get_parameter(n) for n in scoring.masks]
        batches = scoring.batches(params.batches)

        def loss(x, y):
            return F.cross_entropy(logits(call(network, x)) / params.temperature, y)

        g = [torch.zeros_like(w) for w in weights]
        for x, y in batches:
            for total, part in zip(g, torch.autograd.grad(loss(x, y), weights)):
                total += part
        hg = [torch.zeros_like(w) for w in weights]
        for x, y in batches:
            gradient = torch.autograd.grad(loss(x, y), weights, create_graph=True)
            flow = sum((constant * part).sum() for constant, part in zip(g, gradient))
            for total, part in zip(hg, torch.autograd.grad(flow, weights)):
                total += part
        return {n: (w * h).detach() for n, w, h in zip(scoring.masks, weights, hg)}

    def check(self, params, strategy, shapes, fractions, unit):
        if params.batches < 1:
            return f"prune.grasp.batches: must be at least 1, got {params.batches}"
        if not params.temperature > 0:
            return f"prune.grasp.temperature: must be positive, got {params.temperature}"
        return None

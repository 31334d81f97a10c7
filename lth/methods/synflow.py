"""SynFlow, iterative synaptic flow pruning (Tanaka et al. 2020, "Pruning neural networks without any data by
iteratively conserving synaptic flow", §6 and Algorithm 1): data-free. With every weight replaced by its
absolute value, the score of weight j is |w_j · ∂R/∂w_j| for R = 1ᵀ(∏ₗ|Wₗ|)1, the network's output summed for
an all-ones input; the level's fraction is removed over `rounds` rescorings (100 in the paper), each scored on
the masks the last one left, which is what keeps any layer from being cut off. It scores the weights the
level's arms start from, so that with `prune.rewind: "0"` and `prune.schedule: oneshot` it prunes at
initialisation. As in the authors' code, the network is scored in eval mode (batch norm uses its running
statistics) and in float64 (the product over layers can overflow float32)."""

from dataclasses import dataclass

import torch

from lth.inputs import call, filled
from lth.methods.base import Method
from lth.models import logits


@dataclass
class Params:
    rounds: int = 100  # Tanaka et al. 2020, §6: "100 iterations" of pruning and rescoring


class SynFlow(Method):
    name = "synflow"
    Params = Params

    def rounds(self, params):
        return params.rounds

    def scores(self, scoring, params):
        state = {**scoring.rewound(), **{f"{n}_mask": m for n, m in scoring.masks.items()}}
        network = scoring.network(state).double().eval()
        with torch.no_grad():
            for tensor in [*network.parameters(), *network.buffers()]:
                if tensor.is_floating_point():
                    tensor.abs_()
        logits(call(network, filled(scoring.input_shape, 1, 1, torch.float64))).sum().backward()
        return {n: (network.get_parameter(n).grad * network.get_parameter(n)).detach().abs() for n in scoring.masks}

    def check(self, params, strategy, shapes, fractions, unit):
        if params.rounds < 1:
            return f"prune.synflow.rounds: must be at least 1, got {params.rounds}"
        return None

"""Network Slimming (Liu et al. 2017, "Learning Efficient Convolutional Networks through Network Slimming"): an
L1 penalty λ·Σ|γ| on the batch-norm scales while the networks to be pruned train (`prune.slimming.l1`), then
the channels of smallest |γ| removed under one global threshold across layers (§3.2), from the layers whose
channels can be removed alone (`lth.channels`)."""

from dataclasses import dataclass

import torch
from torch import nn

from lth.methods.base import Method
from lth.ranking import Channels


@dataclass
class Params:
    l1: float = 1e-4  # λ: 1e-4 in §4.3 for VGG and ResNet on CIFAR (1e-5 for their ResNet-164)


@dataclass(frozen=True)
class BatchNormL1:
    """Liu et al. (2017), eq. 1: λ·Σ|γ| over every batch norm's scales."""

    l1: float

    def __call__(self, model: nn.Module, pack: int) -> torch.Tensor:  # L1 is a sum over scales: packing changes nothing
        return self.l1 * sum(m.weight.abs().sum() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


class Slimming(Method):
    name = "slimming"
    Params = Params
    example = ("--model=mnist1d_cnn_bn",)  # a network with batch norm

    def unit(self, params, removable, residual=dict):
        return Channels(removable())

    def scores(self, scoring, params):
        return {layer: scoring.trained[r.scale].detach().abs() for layer, r in scoring.structure.items() if r.scale and scoring.fractions[layer] > 0}

    def penalty(self, params, unit):
        return BatchNormL1(params.l1) if params.l1 else None

    def check(self, params, strategy, shapes, fractions, unit):
        if not any(r.scale and fractions[layer] > 0 for layer, r in unit.structure.items()):
            return "prune.method: slimming ranks channels by batch-norm scales, and no pruned layer that can lose channels has a batch norm after it"
        if strategy != "global":
            return "prune.strategy: slimming removes channels under one threshold across layers (Liu et al. 2017, §3.2); set prune.strategy: global"
        if params.l1 < 0:
            return f"prune.slimming.l1: the L1 penalty on batch-norm scales must be >= 0 (1e-4 in Liu et al. 2017), got {params.l1}"
        return None

"""Sparse Structure Selection (Huang & Wang 2018, "Data-Driven Sparse Structure Selection for Deep Neural Networks"),
for residual blocks: a scaling factor on each block's branch, trained under a sparsity penalty, and the blocks whose
factor is smallest removed, so that the network gets shallower (§3.1, eq. 1; §4.2 prunes whole blocks of ResNets).

Huang & Wang add one scalar λ_b per block, multiplying its branch's output, and train the factors with a modified
accelerated proximal gradient (APG, §3.3), under which some reach exactly 0; a block whose factor is 0 is removed.
lth adds no parameter: the batch norm that ends each branch already multiplies its output, by its scale γ_b and shift
β_b (λ_b · (γ_b x̂ + β_b)), so the factor is that pair, penalised by its group norm γ · Σ_b ‖(γ_b, β_b)‖₂ with the run's
own optimizer (a subgradient, as Network Slimming trains its scales), and the blocks of smallest norm are removed,
as many as the level's fraction of the remaining blocks. That trades APG's exact zeros for lth's one rule of how many
go, the rule under which every method's controls are matched. The penalty applies while the networks to be pruned
train (the ticket's chain, fine-tuning's own); the controls train without it.
"""

from dataclasses import dataclass

import torch
from torch import nn

from lth.methods.base import Method
from lth.ranking import Blocks


@dataclass
class Params:
    # γ, the weight of the penalty on the blocks' factors. Huang & Wang sweep it to trade accuracy against depth (§4);
    # this default is lth's, not theirs.
    penalty: float = 1e-3


@dataclass(frozen=True)
class BlockGroupLasso:
    """γ · Σ_b ‖(γ_b, β_b)‖₂ over the batch norms that end the residual branches, each run of a pack its own groups."""

    weight: float
    norms: tuple[str, ...]

    def __call__(self, model: nn.Module, pack: int) -> torch.Tensor:
        factors = [model.get_submodule(n) for n in self.norms]
        return self.weight * sum(torch.cat([f.weight.view(pack, -1), f.bias.view(pack, -1)], 1).norm(dim=1).sum() for f in factors)


class SSS(Method):
    name = "sss"
    Params = Params
    example = ("--model=resnet20", "--prune.fraction=0.34")

    def unit(self, params, removable, residual=dict):
        return Blocks(residual())

    def scores(self, scoring, params):
        """Each branch layer's batch norm's ‖(γ, β)‖₂; a block is ranked by its last (`lth.ranking.Blocks`)."""
        return {layer: torch.cat([scoring.trained[r.followers[0]], scoring.trained[r.followers[1]]]).float().norm() for layer, r in scoring.structure.items()}

    def penalty(self, params, unit):
        return BlockGroupLasso(params.penalty, tuple(b.norms[-1] for b in unit.found.values())) if params.penalty else None

    def check(self, params, strategy, shapes, fractions, unit):
        if not unit.found:
            return ("prune.method: sss removes residual blocks (a module with a `shortcut` or `downsample` whose branch layers each have a "
                    "batch norm after them), and this network has none")
        if params.penalty < 0:
            return f"prune.sss.penalty: must be >= 0, got {params.penalty}"
        return None

"""The one ranking that turns a pruning method's scores into masks, per unit of what is removed.

A method (`lth.methods`) says how much each weight, group or channel matters; a `Unit` removes the lowest
scored, under `prune.strategy`, `prune.layer_fractions` and the dense layers (fraction 0), and draws the
random-pruning control with the same counts per layer (Frankle & Carbin 2019, §2). As Torch-Pruning keeps
its `Importance` apart from its pruner, so scores here never rank themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from lth import blocks, channels
from lth import masks as M


def check_levels(counts: dict[str, int], fractions: dict[str, float], strategy: str, levels: int, floor: int, what: str) -> str | None:
    """What stops `levels` levels of `keep`'s counting short, before anything is built (one line): the first level
    that would remove none of a group's R remaining units (round(p × R) = 0, so that a "pruned" level trains the
    network before it again) or all of them. `counts`: each layer's units; `floor`: the units every layer keeps.
    Each group's loop ends at its first such level, at most its units later, however large `levels` is."""
    groups: dict[object, list[str]] = {}
    for name, fraction in fractions.items():
        if fraction:
            groups.setdefault(fraction if strategy == "global" else name, []).append(name)
    problems = [problem for names in groups.values() if (problem := _stops_at(names, counts, fractions[names[0]], levels, floor, what))]
    return min(problems)[1] if problems else None


def _stops_at(names: list[str], counts: dict[str, int], fraction: float, levels: int, floor: int, what: str) -> tuple[int, str] | None:
    """The first level (and why) at which one group of layers would lose none or all of its remaining units."""
    remaining, kept = sum(counts[n] for n in names), floor * len(names)
    group = names[0] if len(names) == 1 else f"{len(names)} layers sharing fraction {fraction} ({names[0]}, ...)"
    for level in range(1, levels + 1):
        removed = min(round(fraction * remaining), remaining - kept)
        if removed == remaining and level == 1:
            return level, f"prune: a fraction of {fraction} removes all {remaining} {what} of {group} at level 1; choose a smaller one"
        if removed == remaining:
            return level, (f"prune.levels: level {level} would remove all {remaining} {what} left in {group} (fraction {fraction}); at most {level - 1} "
                           f"levels, got {levels}, or prune it more slowly (prune.layer_fractions)")
        if removed <= 0 and level == 1:
            return level, (f"prune: a fraction of {fraction} removes none of the {remaining} {what} of {group} (round({fraction} × {remaining}) = 0); "
                           f"choose at least {0.5 / remaining:.2g}")
        if removed <= 0:
            return level, (f"prune.levels: level {level} would remove none of the {remaining} {what} left in {group} (round({fraction} × {remaining}) = 0); "
                           f"at most {level - 1} levels, got {levels}")
        remaining -= removed
    return None


class Weights:
    """Unstructured: single weights, ranked by their scores."""

    removes_channels: ClassVar[bool] = False
    structure: ClassVar[dict[str, channels.Removable]] = {}  # the layers whose channels it removes: none
    removes: ClassVar[str] = "weights"  # in a phrase, for the reference
    empties_layers: ClassVar[bool] = False  # whether it removes whole layers by design (a layer left empty is otherwise an error)

    def keep(self, scores: dict[str, torch.Tensor], masks: M.Masks, fractions: dict[str, float], strategy: str) -> M.Masks:
        """Remove the lowest-scored remaining weights: a group of layers with R remaining weights and fraction p
        loses round(p × R) of them (Python's round, half to even), so after k levels it keeps (1-p)^k of its
        weights to within 0.5/p weights.

        Layers are ranked in groups. `layerwise` (Frankle & Carbin 2019, §2) makes each layer its own group;
        `global` (Frankle et al. 2020, §4 for ResNet-20 and VGG-16) ranks all layers that share a fraction
        together under one threshold. Ties are broken by position: the weight that comes first in the group
        (layers in the order given, then row-major) is removed first.
        """
        groups: dict[object, list[str]] = {}
        for name, fraction in fractions.items():
            groups.setdefault(fraction if strategy == "global" else name, []).append(name)
        pruned = dict(masks)
        for names in groups.values():
            fraction = fractions[names[0]]
            if fraction == 0.0:
                continue
            ranked = torch.cat([scores[n].detach().float().masked_fill(~masks[n], -torch.inf).flatten() for n in names])
            remaining = int(torch.cat([masks[n].flatten() for n in names]).sum())
            n_dropped = ranked.numel() - remaining + round(fraction * remaining)
            keep = torch.ones_like(ranked, dtype=torch.bool)
            keep[torch.sort(ranked, stable=True).indices[:n_dropped]] = False
            for name, part in zip(names, keep.split([masks[n].numel() for n in names])):
                pruned[name] = part.view_as(masks[name])
        return pruned

    def random_like(self, masks: M.Masks, generator: torch.Generator) -> M.Masks:
        return M.random_like(masks, generator)

    def check_levels(self, shapes: dict[str, tuple[int, ...]], fractions: dict[str, float], strategy: str, levels: int) -> str | None:
        """What stops `levels` levels short under `keep`'s counting (`check_levels`), before anything is built."""
        return check_levels({n: math.prod(shape) for n, shape in shapes.items()}, fractions, strategy, levels, 0, "weights")


def groups_of(t: torch.Tensor, m: int) -> torch.Tensor:
    """[..., M] groups along the input dimension: dim 1 of a Linear [out, in] or Conv [out, in, *kernel] weight,
    moved last so that consecutive input channels at one kernel position form a group (NVIDIA's ASP layout)."""
    return t.movedim(1, -1).reshape(-1, m)


@dataclass(frozen=True)
class NMGroups(Weights):
    """N:M fine-grained sparsity: in every group of M consecutive weights along the input dimension, the N of
    highest score stay. Its random control is unstructured with the same per-layer counts."""

    n: int
    m: int
    removes: ClassVar[str] = "weights, N of every M"

    def keep(self, scores, masks, fractions, strategy):
        """Layers with fraction 0 (`dense_layers`) stay as they are; in the others, each group of M keeps its N
        highest-scored remaining weights (fewer where fewer remain). Ties go to the earlier position."""
        pruned = dict(masks)
        for name, fraction in fractions.items():
            if fraction == 0.0:
                continue
            mask = masks[name]
            ranked = groups_of(scores[name].detach().float().masked_fill(~mask, -torch.inf), self.m)
            order = torch.sort(ranked, dim=1, descending=True, stable=True).indices[:, : self.n]
            keep = torch.zeros_like(ranked, dtype=torch.bool).scatter_(1, order, True) & groups_of(mask, self.m)
            pruned[name] = keep.view(mask.movedim(1, -1).shape).movedim(-1, 1).contiguous()
        return pruned

    def check_levels(self, shapes, fractions, strategy, levels):
        if levels > 1:  # the first pruned level keeps N of every M; another would keep those same N
            return (f"prune.levels: {self.n}:{self.m} sparsity is reached at the first pruned level and a second removes nothing; "
                    f"set prune.levels: 1 (got {levels})")
        return None


@dataclass(frozen=True, eq=False)
class Channels:
    """Whole output channels of the layers whose channels can be removed alone (`lth.channels.removable`);
    scores are per channel. Its random control draws channels, and the arms that train from scratch train the
    physically narrower network (`lth.arms.base.Arm.narrow`)."""

    structure: dict[str, channels.Removable]
    removes_channels: ClassVar[bool] = True
    removes: ClassVar[str] = "output channels"
    empties_layers: ClassVar[bool] = False

    def keep(self, scores, masks, fractions, strategy):
        return channels.drop(scores, masks, fractions, strategy, self.structure)

    def random_like(self, masks, generator):
        return channels.random_like(masks, generator, self.structure)

    def check_levels(self, shapes, fractions, strategy, levels):
        """`channels.drop`'s counting: every layer keeps its best channel."""
        counts = {layer: shapes[layer][0] for layer in self.structure}
        return check_levels(counts, {n: f for n, f in fractions.items() if n in counts}, strategy, levels, 1, "channels")

    def narrow(self, model, masks: M.Masks, input_shape) -> torch.nn.Module:
        """The physically narrower network (`lth.channels.narrow`)."""
        return channels.narrow(model, masks, self.structure, input_shape)


@dataclass(frozen=True, eq=False)
class Blocks:
    """Whole residual blocks (`lth.blocks`), one score per block, the lowest removed under one ranking across the
    network; every block's branch layers are masked with it. Its random control draws blocks, and the arms that train
    from scratch train the shallower network."""

    found: dict[str, blocks.Block]
    removes_channels: ClassVar[bool] = True  # a removed block's branch channels all go, so the scratch arms train narrow
    removes: ClassVar[str] = "residual blocks"
    empties_layers: ClassVar[bool] = True

    @property
    def structure(self) -> dict[str, channels.Removable]:
        """Each branch layer with the batch norm after it, which `MaskedModule` zeroes with a removed block."""
        return blocks.followers(self.found)

    def keep(self, scores, masks, fractions, strategy):
        """round(p × R) of the R remaining blocks go, the lowest-scored, at least one staying; ties go to the earlier.
        A block's score is its last branch layer's: the layer whose batch norm scales what the branch adds."""
        remaining = [name for name, block in self.found.items() if blocks.alive(masks, block)]
        fraction = fractions[self.found[remaining[0]].layers[0]]
        ranked = sorted(remaining, key=lambda name: float(scores[self.found[name].layers[-1]]))
        return blocks.remove(masks, ranked[: channels.removed(len(remaining), fraction)], self.found)

    def random_like(self, masks, generator):
        return blocks.random_like(masks, generator, self.found)

    def check_levels(self, shapes, fractions, strategy, levels):
        fraction = fractions[next(iter(self.found.values())).layers[0]] if self.found else 0.0
        return check_levels({"blocks": len(self.found)}, {"blocks": fraction}, "global", levels, 1, "residual blocks")

    def narrow(self, model, masks: M.Masks, input_shape) -> torch.nn.Module:
        """The shallower network: each removed block replaced by its shortcut (`lth.blocks.narrow`)."""
        return blocks.narrow(model, masks, self.found)

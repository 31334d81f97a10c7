"""Dynamic sparse training, the standing alternative to IMP: a sparse network trained from scratch whose connections
move as it trains (SET, Mocanu et al. 2018; RigL, Evci et al. 2020, "Rigging the Lottery"). What the `set` and
`rigl` arms share: their settings, the ERK layer densities, and the drop-and-grow step they apply every
`update_every` steps; the arms differ only in how a connection is chosen to grow.

The update follows Evci et al.'s Algorithm 1 and their code (google-research/rigl, `sparse_optimizers_base.py`):
at step t, a multiple of ΔT below T_end, each sparse layer drops int(f(t) · n) of its n active connections, those
of smallest magnitude, with f(t) = α/2 · (1 + cos(π t / T_end)) (§3, "cosine annealing"); then as many grow among
the connections inactive after the drop (a just-dropped one may grow back and keep its value); a connection that
was inactive before the update starts at 0 with its optimizer state (momentum, Adam's moments) reset to 0. A
layer's count of connections never changes. Ties fall to the earlier position (the authors add noise instead).
Between updates `lth.module.MaskedModule` holds pruned weights at exactly 0 after every step, as for every arm.

The update reads only the step, the network's weights, gradients and masks and, for SET's random growth, a
generator seeded by (seed, arm, level, step): it keeps no state of its own, so a run resumed from any checkpoint,
packed with any others, updates as it would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from lightning.pytorch.callbacks import Callback

from lth import masks as M
from lth.arms.base import INIT, Arm
from lth.data import seeded_generator
from lth.masks import Masks

# A layer's scores for growth: given its weight, its gradient and a generator, higher grows first.
Grow = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]
DISTRIBUTIONS = ("ticket", "erk")


@dataclass
class Params:
    # The per-layer counts it trains under: the ticket's at this level ("ticket", like random pruning), or ERK
    # densities at the ticket's overall count ("erk", Evci et al. 2020, §3), the layers the ticket keeps dense kept so.
    distribution: str = "ticket"
    update_every: int = 100  # ΔT in steps (Evci et al. 2020, §4.1: 100 for ResNet-50 on ImageNet)
    drop_fraction: float = 0.3  # α, the fraction dropped at the first update (§4.1: 0.3)
    end: float = 0.75  # T_end as a fraction of its training: no update after it (§4.1: 75% of training)


def check(name: str, params: Params) -> str | None:
    """What is wrong with a dynamic sparse arm's settings (one line)."""
    if params.distribution not in DISTRIBUTIONS:
        return f"{name}.distribution: one of {', '.join(DISTRIBUTIONS)}, got {params.distribution!r}"
    if params.update_every < 1:
        return f"{name}.update_every: must be at least 1 step, got {params.update_every}"
    if not 0 < params.drop_fraction <= 1:
        return f"{name}.drop_fraction: must lie in (0, 1], got {params.drop_fraction}"
    if not 0 < params.end <= 1:
        return f"{name}.end: must lie in (0, 1], got {params.end}"
    return None


def erk_counts(shapes: dict[str, tuple[int, ...]], kept: int) -> dict[str, int]:
    """Erdős-Rényi-Kernel: each layer's density proportional to (Σ its dimensions) / (Π its dimensions), scaled so
    that the layers keep `kept` weights in all; a layer whose density would pass 1 is kept dense and the others
    scaled again (Evci et al. 2020, §3; their `sparse_utils.get_sparsities_erdos_renyi`). Rounded per layer, so the
    total is `kept` to within half a weight per layer."""
    raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        rest = [n for n in shapes if n not in dense]
        scale = (kept - sum(math.prod(shapes[n]) for n in dense)) / sum(raw[n] * math.prod(shapes[n]) for n in rest)
        densest = max(rest, key=raw.__getitem__)
        if scale * raw[densest] <= 1 or len(rest) == 1:
            break
        dense.add(densest)
    return {n: math.prod(s) if n in dense else min(math.prod(s), round(scale * raw[n] * math.prod(s))) for n, s in shapes.items()}


def drop_fraction(step: int, params: Params, total_steps: int) -> float | None:
    """f(t) at an update step t, or None if t is not one."""
    end = params.end * total_steps
    if step <= 0 or step >= end or step % params.update_every:
        return None
    return params.drop_fraction / 2 * (1 + math.cos(math.pi * step / end))


def drop_and_grow(weight: torch.Tensor, gradient: torch.Tensor, mask: torch.Tensor, fraction: float, grow: Grow,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's update: its new mask, and the connections new to it (inactive before, grown now)."""
    n = int(mask.sum())
    moved = int(n * fraction)
    flat = mask.flatten()
    if moved == 0 or n == flat.numel():
        return mask, torch.zeros_like(mask)
    # Stable sorts: equal scores fall by position, the same on every machine and thread count.
    smallest = torch.argsort(weight.detach().abs().flatten().masked_fill(~flat, math.inf), stable=True)[:moved]
    after_drop = flat.clone()
    after_drop[smallest] = False
    scores = grow(weight.detach(), gradient.detach(), generator).flatten().float().to(flat.device).masked_fill(after_drop, -math.inf)
    grown = torch.argsort(scores, descending=True, stable=True)[:moved]
    new = after_drop.clone()
    new[grown] = True
    return new.view_as(mask), (new & ~flat).view_as(mask)


class DropAndGrow(Callback):
    """The update, after the optimizer step of each update step, for every member of a pack of one dynamic sparse
    arm; `generator(k, step)` draws member k's random growth at that step."""

    def __init__(self, params: Params, grow: Grow, generator: Callable[[int, int], torch.Generator], total_steps: int):
        self.params, self.grow, self.generator, self.total_steps = params, grow, generator, total_steps

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        fraction = drop_fraction(step, self.params, self.total_steps)
        if fraction is None:
            return
        k = pl_module.pack
        optimizer_state = trainer.optimizers[0].state
        masks: Masks = {n: m.clone() for n, m in pl_module.masks().items()}
        generators = [self.generator(i, step) for i in range(k)]  # one per member, drawn from layer to layer in order
        for name, weight in pl_module.weights().items():
            state = [s for s in optimizer_state.get(weight, {}).values() if isinstance(s, torch.Tensor) and s.shape == weight.shape]
            gradient = weight.grad if weight.grad is not None else torch.zeros_like(weight)
            for i, (w, g, m) in enumerate(zip(weight.chunk(k), gradient.chunk(k), masks[name].chunk(k))):
                mask, new = drop_and_grow(w, g, m, fraction, self.grow, generators[i])
                m.copy_(mask)
                w.masked_fill_(new, 0.0)
                for s in state:
                    s.chunk(k)[i].masked_fill_(new, 0.0)
        pl_module.set_masks(masks)


class DynamicSparse(Arm):
    """A sparse network trained from scratch at the ticket's sparsity, its connections moving as it trains: a fresh
    init, under a random mask of the ticket's per-layer counts or of ERK counts at the same overall count, trained
    from step 0 on the dense run's schedule (as Scratch-E), the drop-and-grow update every `update_every` steps.
    A subclass says how a connection is chosen to grow."""

    weights = INIT
    from_rewind_point = False
    moves_masks = True
    Params = Params

    def grow(self, weight: torch.Tensor, gradient: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def check(self, params):
        return check(self.name, params)

    def masks(self, ctx):
        generator = seeded_generator(ctx.seed, self.name, ctx.level)
        if ctx.params.distribution == "ticket":
            return M.random_like(ctx.masks, generator)
        sparse = {n: m for n, m in ctx.masks.items() if not m.all()}  # the layers the ticket keeps dense stay dense
        counts = erk_counts({n: tuple(m.shape) for n, m in sparse.items()}, sum(int(m.sum()) for m in sparse.values()))
        return {**ctx.masks, **M.random_with({n: (tuple(m.shape), counts[n]) for n, m in sparse.items()}, generator)}

    def hooks(self, params, total_steps, members):
        def generator(k: int, step: int) -> torch.Generator:
            seed, level = members[k]
            return seeded_generator(seed, self.name, level, step)

        return [DropAndGrow(params, self.grow, generator, total_steps)]

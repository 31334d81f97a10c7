"""What an arm is: a declaration of where its weights come from, which masks it trains under, whether its init
is fresh and which schedule it trains; `Arm.start` turns the declaration into a `Start` value from a read-only
`Level` context. Only the driver (`lth.imp`) builds networks, writes checkpoints and trains."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from lightning.pytorch.callbacks import Callback

from lth.data import seeded_generator
from lth.masks import Masks
from lth.ranking import Channels, Weights
from lth.steps import Steps

State = dict[str, torch.Tensor]  # a network's state, keyed as the network names it

# Where an arm's weights come from. (Its optimizer state, for arms that start at the rewind point, follows
# `prune.rewind_optimizer`, one policy for every arm.)
REWOUND = "rewound"  # the dense run's weights at the rewind step
INIT = "init"  # a fresh init, drawn from the arm's own seed at each level
PRUNED = "pruned"  # the weights the level was pruned from: the chain's previous level, trained (Renda et al. 2020)


@dataclass(frozen=True)
class Level:
    """What an arm may read when it starts a level (> 0). The tensors are loaded only when asked for."""

    level: int
    seed: int  # the run's
    masks: Masks  # its chain's masks at this level
    steps: Steps  # the dense run's
    lr: float  # `train.lr`, and `train.gamma`, its decay at each milestone
    gamma: float
    unit: Weights | Channels  # what the experiment's method removes
    params: Any  # the arm's own settings (`Arm.Params`, under the arm's name in the YAML), or None
    rewound: Callable[[], State]  # the rewind point's weights (unmasked)
    # its source's trained network of the previous level (`Arm.source`), with any weights the method refitted (`Method.refit`)
    trained: Callable[[], State]
    fresh: Callable[[], State]  # the fresh init of its `init_seed`
    macs: Callable[[Masks | None], int]  # per example, of the network under these masks (None: dense)


@dataclass(frozen=True)
class Start:
    """Where an arm starts a level. From the rewind point: the dense run's LR and data position at the rewind
    step, with `weights` (None: the rewind point's own). Otherwise: step 0 of its own `steps` at `lr` (None: the
    dense run's), from `weights` (None: its fresh init)."""

    masks: Masks
    weights: State | None = None
    from_rewind_point: bool = True
    steps: Steps | None = None
    lr: float | None = None
    narrow: bool = False  # trains the physically narrower network (`Arm.narrow`)


class Arm:
    """The ticket or a control (`arms`): where its weights come from, which masks it trains under, whether its init
    is fresh, which schedule it trains, and any hooks on its own training."""

    name: ClassVar[str]
    weights: ClassVar[str]
    Params: ClassVar[type | None] = None  # its settings, under its name at the top of the YAML
    order: ClassVar[int] = 100  # where it stands among the arms: the order they train in and the report shows
    # True: continue the dense run's schedule from the rewind step (its LR and data position); False: train
    # the arm's own `steps` from step 0.
    from_rewind_point: ClassVar[bool] = True
    # The ticket: it alone trains level 0 (the dense network; controls compare pruned networks), and its masks
    # are the ones its controls share.
    is_ticket: ClassVar[bool] = False
    # True: an iterative chain of its own (Renda et al. 2020, §2): each level prunes the arm's own previous
    # level, trained, so it has masks of its own. False: it trains on the ticket's masks.
    own_chain: ClassVar[bool] = False
    # True: its masks change as it trains (dynamic sparse training): its `hooks` act on its whole pack, so it packs
    # only with members of its own arm.
    moves_masks: ClassVar[bool] = False

    def check(self, params: Any) -> str | None:
        """What is wrong with its settings (one line), before any training."""
        return None

    def masks(self, ctx: Level) -> Masks:
        """The masks it trains under, given its chain's at this level."""
        return ctx.masks

    def narrow(self, unit: Weights | Channels) -> bool:
        """Whether it trains the physically narrower network rather than the masked wide one: the arms that
        train from scratch, under a method that removes whole channels (Liu et al. 2019, §4: Scratch-E and
        Scratch-B train the pruned architecture, so their MACs and speed are the small network's)."""
        return unit.removes_channels and self.weights == INIT and not self.from_rewind_point

    def chain(self) -> str:
        """The arm whose levels this arm's masks are made from."""
        return self.name if self.own_chain else "ticket"

    def source(self, level: int) -> str:
        """The arm whose trained network of level `level - 1` this arm's level is made from (level 0 is the
        ticket's dense network, which begins every chain)."""
        return self.chain() if level > 1 else "ticket"

    def trains_at(self, level: int) -> bool:
        return level > 0 or self.is_ticket

    def init_seed(self, seed: int, level: int) -> int:
        """The ticket's init is the run's seed; each fresh-init arm draws its own init per level."""
        if self.weights != INIT:
            return seed
        return seeded_generator(seed, self.name, level).initial_seed() % 2**31

    def own_steps(self, ctx: Level) -> tuple[Steps, float | None]:
        """Its own schedule and learning rate (None: the dense run's), for an arm that does not continue from
        the rewind point."""
        return ctx.steps, None

    def start(self, ctx: Level) -> Start:
        masks = self.masks(ctx)
        narrow = self.narrow(ctx.unit)
        weights = ctx.trained() if self.weights == PRUNED else None
        if self.from_rewind_point:
            return Start(masks, ctx.fresh() if self.weights == INIT else weights, narrow=narrow)
        steps, lr = self.own_steps(ctx)
        return Start(masks, weights, from_rewind_point=False, steps=steps, lr=lr, narrow=narrow)

    def hooks(self, params: Any, total_steps: int, members: list[tuple[int, int]]) -> list[Callback]:
        """Callbacks for its training at a pruned level, for a pack of its members, each given as (its run's seed, its
        level) in pack order; `total_steps`: the steps the pack trains."""
        return []

    def optimizer_origin(self, rewind_step: int, policy: str) -> str:
        """Whose optimizer state it starts with (`prune.rewind_optimizer` is the policy); members of a pack share
        their scalar optimizer state (Adam's step count), so only arms with the same origin may share a pack."""
        return "rewind" if self.from_rewind_point and policy == "restore" and rewind_step > 0 else "fresh"

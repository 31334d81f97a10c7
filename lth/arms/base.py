"""What an arm is: a declaration of where its weights come from, which masks it trains under, whether its
init is fresh and which schedule it trains — and `Arm.start`, the one place that turns a declaration into
the state an arm starts a level from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from lth.data import seeded_generator
from lth.masks import Masks
from lth.rewinding import start_checkpoint
from lth.run_dir import START

if TYPE_CHECKING:
    from lth.config import Schedule, TrainConfig
    from lth.imp import Run
    from lth.module import MaskedModule

# Where an arm's weights come from. (Its optimizer state, for arms that start at the rewind point, follows
# `prune.rewind_optimizer`, one policy for every arm.)
REWIND = "rewind"  # the dense run's weights at the rewind step
INIT = "init"  # a fresh init, drawn from the arm's own seed at each level
PRUNED = "pruned"  # the weights the level was pruned from: the chain's previous level, trained (Renda et al. 2020)


class Arm:
    name: ClassVar[str]
    weights: ClassVar[str]
    # True: continue the dense run's schedule from the rewind step (its LR and data position); False: train
    # the arm's own `schedule` from step 0.
    from_rewind_point: ClassVar[bool] = True
    # Level 0 is the dense network, which only the ticket trains: controls compare pruned networks.
    dense: ClassVar[bool] = False
    # True: an iterative chain of its own (Renda et al. 2020, §2): each level prunes the arm's own previous
    # level, trained, so it has masks of its own. False: it trains on the ticket's masks.
    own_chain: ClassVar[bool] = False

    def masks(self, run: Run, chain: Masks, level: int) -> Masks:
        """The masks it trains under, given its chain's at this level."""
        return chain

    def narrow(self, structured: bool) -> bool:
        """Whether it trains the physically narrower network rather than the masked wide one: the arms that
        train from scratch, under a method that removes whole channels (Liu et al. 2019, §4: Scratch-E and
        Scratch-B train the pruned architecture, so their MACs and speed are the small network's)."""
        return structured and self.weights == INIT and not self.from_rewind_point

    def chain(self) -> str:
        """The arm whose levels this arm's masks are made from."""
        return self.name if self.own_chain else "ticket"

    def source(self, level: int) -> str:
        """The arm whose trained network of level `level - 1` this arm's level is made from (level 0 is the
        ticket's dense network, which begins every chain)."""
        return self.chain() if level > 1 else "ticket"

    def schedule(self, run: Run, module: MaskedModule, masks: Masks) -> tuple[Schedule, TrainConfig]:
        """Its own schedule and optimizer settings, for an arm that does not continue from the rewind point."""
        return run.schedule, run.cfg.train

    def trains_at(self, level: int) -> bool:
        return level > 0 or self.dense

    def init_seed(self, seed: int, level: int) -> int:
        """The ticket's init is the run's seed; each fresh-init arm draws its own init per level."""
        if self.weights != INIT:
            return seed
        return seeded_generator(seed, self.name, level).initial_seed() % 2**31

    def optimizer_origin(self, rewind_step: int, policy: str) -> str:
        """Whose optimizer state it starts with (`prune.rewind_optimizer` is the policy); members of a pack share
        their scalar optimizer state (Adam's step count), so only arms with the same origin may share a pack."""
        return "rewind" if self.from_rewind_point and policy == "restore" and rewind_step > 0 else "fresh"

    def start(self, run: Run, level: int, module: MaskedModule, chain: Masks) -> tuple[Masks, Path | None, int]:
        """Its masks, the checkpoint it starts from (None: the module's own weights at step 0) and that step,
        given its chain's masks at this level. `module` is freshly built from `init_seed`; this may replace
        its weights and schedule."""
        masks = self.masks(run, chain, level)
        if level == 0:
            return masks, None, 0
        trained = run.trained_weights(level - 1, self.source(level)) if self.weights == PRUNED else None
        if self.from_rewind_point:
            # REWIND: the rewind checkpoint's own weights (None); INIT: the module's fresh ones; PRUNED: `trained`.
            weights = module.model.state_dict() if self.weights == INIT else trained
            start = start_checkpoint(run.dir.arm(level, self.name) / START, run.dir.rewind, masks, run.cfg.prune.rewind_optimizer, weights)
            return masks, start, run.schedule.rewind_step
        if trained is not None:
            module.model.load_state_dict(trained)
        module.schedule, module.train_cfg = self.schedule(run, module, masks)
        return masks, None, 0

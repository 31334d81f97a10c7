from lth.arms.base import REWIND, Arm
from lth.data import seeded_generator
from lth.masks import Masks
from lth.methods import METHODS


class RandomPrune(Arm):
    """Random pruning (Frankle & Carbin 2019, §2): a random mask with exactly the ticket's per-layer counts (of
    weights, or of channels under a channel method), on the rewind-point weights, trained on the ticket's
    schedule."""

    name = "random_prune"
    weights = REWIND

    def masks(self, run, ticket: Masks, level: int) -> Masks:
        generator = seeded_generator(run.cfg.seed, self.name, level)
        return METHODS[run.cfg.prune.method].random_like(ticket, generator, run.structure)

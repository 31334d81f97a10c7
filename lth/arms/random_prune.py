from lth import channels
from lth.arms.base import REWIND, Arm
from lth.data import seeded_generator
from lth.masks import Masks, random_like
from lth.methods import METHODS


class RandomPrune(Arm):
    """Random pruning (Frankle & Carbin 2019, §2): a random mask with exactly the ticket's per-layer counts of
    the units its method removes (weights, or channels under a channel method), on the rewind-point weights,
    trained on the ticket's schedule."""

    name = "random_prune"
    weights = REWIND

    def masks(self, run, ticket: Masks, level: int) -> Masks:
        generator = seeded_generator(run.cfg.seed, self.name, level)
        if METHODS[run.cfg.prune.method].STRUCTURED:
            return channels.random_like(ticket, generator, run.structure)
        return random_like(ticket, generator)

from lth.arms.base import REWOUND, Arm
from lth.data import seeded_generator


class RandomPrune(Arm):
    """Random pruning (Frankle & Carbin 2019, §2): a random mask with exactly the ticket's per-layer counts of
    the units its method removes (weights, or channels under a channel method), on the rewind-point weights,
    trained on the ticket's schedule."""

    name = "random_prune"
    order = 2
    weights = REWOUND

    def masks(self, ctx):
        return ctx.unit.random_like(ctx.masks, seeded_generator(ctx.seed, self.name, ctx.level))

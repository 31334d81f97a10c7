from lth.arms.base import REWIND, Arm
from lth.data import seeded_generator
from lth.masks import Masks, random_like


class RandomPrune(Arm):
    """Random pruning (Frankle & Carbin 2019, §2): a random mask with exactly the ticket's per-layer counts,
    on the rewind-point weights, trained on the ticket's schedule."""

    name = "random_prune"
    weights = REWIND

    def masks(self, ticket: Masks, seed: int, level: int) -> Masks:
        return random_like(ticket, seeded_generator(seed, self.name, level))

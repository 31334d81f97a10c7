import torch

from lth.arms.base import REWOUND, Arm, Start
from lth.data import seeded_generator


class Shuffle(Arm):
    """The ticket's mask, with its rewind-point weights permuted at random among the kept positions of each layer:
    the layerwise shuffle of Frankle et al. (2021, "Pruning Neural Networks at Initialization: Why are We Missing
    the Mark?", §5). Each layer keeps its multiset of values and its density; only where the values sit changes."""

    name = "shuffle"
    order = 8
    weights = REWOUND

    def start(self, ctx):
        rewound, shuffled = ctx.rewound(), {}
        for name, kept in ctx.masks.items():
            weight = rewound[name].clone()
            values = weight[kept]
            weight[kept] = values[torch.randperm(len(values), generator=seeded_generator(ctx.seed, self.name, ctx.level, name))]
            shuffled[name] = weight
        return Start(ctx.masks, shuffled)


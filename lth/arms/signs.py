import torch

from lth.arms.base import INIT, Arm, Start


class Signs(Arm):
    """The ticket's mask and the signs of its rewind-point weights, with magnitudes drawn fresh from the
    initialiser (Zhou et al. 2019, "Deconstructing Lottery Tickets", §4: the signs carry most of a ticket's
    advantage). Everything else is the rewind point's; it trains on the ticket's schedule from the rewind step."""

    name = "signs"
    order = 7
    weights = INIT  # its magnitudes: a fresh init of its own seed at each level

    def start(self, ctx):
        rewound, fresh = ctx.rewound(), ctx.fresh()
        return Start(ctx.masks, {name: torch.sign(rewound[name]) * fresh[name].abs() for name in ctx.masks})

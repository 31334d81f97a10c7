"""Magnitude at initialisation (Frankle et al. 2021, "Pruning Neural Networks at Initialization: Why Are We Missing
the Mark?", §3, the naive baseline they set beside SNIP, GraSP and SynFlow): |w| of the weights the level's arms
start from, not of the trained network. With `prune.rewind: "0"` and `prune.schedule: oneshot` it prunes the init
by magnitude before any training."""

from lth.methods.base import Method


class MagnitudeInit(Method):
    name = "magnitude_init"
    order = 1

    def scores(self, scoring, params):
        rewound = scoring.rewound()
        return {n: rewound[n].abs() for n in scoring.masks}

"""RigL (Evci et al. 2020, "Rigging the Lottery", §3 and Algorithm 1): dynamic sparse training that grows the
connections of largest gradient magnitude |∂L/∂θ|, the dense gradient of the update step's batch (at an
inactive connection, whose weight is exactly 0, it is what the loss would gain from growing it)."""

from lth.dynamic_sparse import DynamicSparse


class RigL(DynamicSparse):
    name = "rigl"
    order = 10

    def grow(self, weight, gradient, generator):
        return gradient.abs()

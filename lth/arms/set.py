"""SET, sparse evolutionary training (Mocanu et al. 2018, "Scalable training of artificial neural networks with
adaptive sparse connectivity inspired by network science"): dynamic sparse training that grows connections at
random, here on RigL's update schedule (Evci et al. 2020 compare the two so, §4)."""

import torch

from lth.dynamic_sparse import DynamicSparse


class SET(DynamicSparse):
    name = "set"
    order = 11

    def grow(self, weight, gradient, generator):
        return torch.rand(weight.shape, generator=generator)

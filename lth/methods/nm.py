"""N:M fine-grained sparsity (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks"; NVIDIA's ASP): in
every group of M consecutive weights along the input dimension, keep the N of largest magnitude. 2:4, the
default, is the layout that Ampere and Hopper sparse tensor cores accept
(`torch.sparse.to_sparse_semi_structured`)."""

from dataclasses import dataclass

from lth.methods.magnitude import Magnitude
from lth.ranking import NMGroups


@dataclass
class Params:
    n: int = 2  # kept in every group of m consecutive weights along the input dimension
    m: int = 4  # 2:4 is the layout sparse tensor cores accept


class NM(Magnitude):
    name = "nm"
    example = ("--prune.nm=[2,4]", "--prune.levels=1")  # 2:4 is reached at the first pruned level
    Params = Params

    def unit(self, params, removable, residual=dict):
        return NMGroups(params.n, params.m)

    def check(self, params, strategy, shapes, fractions, unit):
        if not 0 < params.n < params.m:
            return f"prune.nm: the method nm needs 0 < n < m (2:4 for sparse tensor cores), got {params.n}:{params.m}"
        for name, shape in shapes.items():
            if fractions[name] > 0 and shape[1] % params.m:
                return f"prune.nm: {name} has input dimension {shape[1]}, not a multiple of m = {params.m}; leave it dense (prune.dense_layers)"
        return None

"""Channel pruning by regression (He et al. 2017, "Channel Pruning for Accelerating Very Deep Neural Networks"): layer
i's channels are chosen by how well layer i+1's output can be rebuilt without them. LASSO on sampled activations
selects the channels (§3.1, eq. 2 with the weights fixed), then least squares refits layer i+1's weights on the
channels kept to the output of the unpruned network (§3.1, eq. 3).

He et al. solve one pass of their alternation: LASSO with λ raised until at most the kept number of coefficients β are
non-zero, then least squares once (§3.1, "we find that it is sufficient to ..."). Each channel's part of the output is
scaled to unit norm (their constraint ‖W_i‖_F = 1), so that λ weighs channels by what they contribute rather than by
their scale. The scores rank first the channels LASSO keeps at the smallest such λ, then the others by |β| at the
largest λ that keeps too many, so the ranking removes exactly He et al.'s choice whenever LASSO reaches the count.
Scores are per layer: prune it `layerwise`. A level chooses every layer's channels from the one network it prunes;
He et al. prune layer after layer, each reading the already pruned layers before it (§3.2)."""

from dataclasses import dataclass

import numpy as np
import torch

from lth import activations, channels
from lth.masks import channels_alive
from lth.methods.base import Method
from lth.ranking import Channels


@dataclass
class Params:
    # The first training batches of the run's data order that are sampled (He et al. 2017, §4 sample 5,000 ImageNet
    # images; these are a CPU-sized share).
    batches: int = 10
    locations: int = 10  # receptive fields sampled per example (§4: 10 per image)


def gram(samples: list[activations.Consumer], alive: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The LASSO problem ½βᵀGβ − bᵀβ + λ‖β‖₁ over the alive channels, in Gram form: G[c, d] = ⟨Z_c, Z_d⟩, where Z_c is
    channel c's part of every sampled output of every reading layer, scaled to unit norm, and b = Gβ at β = 1 (the
    unpruned output is the sum of the parts). Z_c = X_c W_cᵀ, so G[c, d] is the sum over the (c, d) block of XᵀX ⊙ WᵀW,
    which never forms the parts themselves."""
    index = alive.nonzero().flatten()
    g = torch.zeros(len(index), len(index), dtype=torch.float64)
    for s in samples:
        x, w = s.x.double(), s.weight.double()
        both = (x.T @ x) * (w.T @ w)
        cols = [s.columns[c] for c in index.tolist()]
        g += torch.stack([torch.stack([both[a][:, b].sum() for b in cols]) for a in cols])
    norm = g.diagonal().clamp_min(1e-30).sqrt()
    g = g / norm[:, None] / norm[None, :]
    return g, g @ norm  # β = ‖Z_c‖ per channel rebuilds the output exactly in the scaled parts


def lasso(g: np.ndarray, b: np.ndarray, lam: float, sweeps: int = 1000, tol: float = 1e-12) -> np.ndarray:
    """Coordinate descent on ½βᵀGβ − bᵀβ + λ‖β‖₁ (G has a unit diagonal), in numpy: one scalar update at a time."""
    beta = np.zeros_like(b)
    for _ in range(sweeps):
        biggest = 0.0
        for j in range(len(b)):
            rho = b[j] - g[j] @ beta + beta[j]
            new = np.sign(rho) * max(abs(rho) - lam, 0.0)
            biggest, beta[j] = max(biggest, abs(new - beta[j])), new
        if biggest < tol:
            break
    return beta


def select(g: torch.Tensor, b: torch.Tensor, keep: int, steps: int = 40) -> torch.Tensor:
    """Scores over the alive channels: λ bisected for the smallest value with at most `keep` non-zero β; the channels
    non-zero there first, then the rest by |β| at the largest λ found with more than `keep` non-zero."""
    g, b = g.numpy(), b.numpy()
    low, high = 0.0, float(np.abs(b).max())  # at λ ≥ max |b| every β is 0
    beta_high, beta_low = lasso(g, b, high), lasso(g, b, low)
    for _ in range(steps):
        middle = (low + high) / 2
        beta = lasso(g, b, middle)
        if np.count_nonzero(beta) <= keep:
            high, beta_high = middle, beta
        else:
            low, beta_low = middle, beta
    rest = np.abs(beta_low) / (1 + np.abs(beta_low).max())
    return torch.from_numpy((beta_high != 0) + rest)


def reconstruct(consumer: activations.Consumer, kept: torch.Tensor) -> torch.Tensor:
    """§3.1, eq. 3: the weight W' [n, F] on the kept channels' columns that minimises ‖Y − X' W'ᵀ‖ over the samples, Y
    the unpruned layer's output; zero on the other columns."""
    cols = consumer.of_channels(kept)
    y, x = consumer.output().double(), consumer.x.double()
    out = torch.zeros_like(consumer.weight, dtype=torch.float64)
    out[:, cols] = torch.linalg.lstsq(x[:, cols], y).solution.T
    return out


class Regression(Method):
    name = "regression"
    Params = Params
    example = ("--prune.strategy=layerwise",)
    reconstructs = "the next layer's weights on the channels kept, fitted by least squares to the unpruned output (He et al. 2017, §3.1)"

    def unit(self, params, removable, residual=dict):
        return Channels(removable())

    def scores(self, scoring, params):
        out = {}
        for layer, samples in activations.consumers(scoring, params.batches, params.locations).items():
            alive = channels_alive(scoring.masks[layer])
            keep = int(alive.sum()) - channels.removed(int(alive.sum()), scoring.fractions[layer])
            score = torch.zeros(len(alive), dtype=torch.float64)
            score[alive] = select(*gram(samples, alive), keep)
            out[layer] = score.float()
        return out

    def refit(self, scoring, params, masks):
        out = {}
        for layer, samples in activations.consumers(scoring, params.batches, params.locations).items():
            for consumer in samples:
                weight = scoring.trained[consumer.name]
                out[consumer.name] = reconstruct(consumer, channels_alive(masks[layer])).to(weight.dtype).view_as(weight) * masks[consumer.name]
        return out

    def check(self, params, strategy, shapes, fractions, unit):
        if not any(fractions[layer] > 0 for layer in unit.structure):
            return "prune.method: regression finds no pruned layer whose output channels can be removed alone (see lth/channels.py)"
        if strategy != "layerwise":
            return "prune.strategy: regression keeps a number of channels per layer (He et al. 2017, §3.1); set prune.strategy: layerwise"
        if params.batches < 1 or params.locations < 1:
            return f"prune.regression: batches and locations must be at least 1, got {params.batches} and {params.locations}"
        return None

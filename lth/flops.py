"""Multiply-accumulate counts of the Linear and Conv layers, dense or masked (for Scratch-B's budget)."""

from __future__ import annotations

import torch
from torch import nn

from lth.models import prunable_names


def macs(model: nn.Module, input_shape: tuple[int, ...], masks: dict[str, torch.Tensor] | None = None) -> int:
    """MACs for one example. A layer's weight is used once per output position (1 for Linear, H×W for a
    2-D conv, L for a 1-D conv); with masks, only kept weights count. Biases, normalisation, activations
    and pooling are not counted, as is usual in the pruning literature."""
    positions: dict[str, int] = {}
    hooks = []
    for name in prunable_names(model):
        module = model.get_submodule(name.rpartition(".")[0])
        record = lambda m, args, out, name=name: positions.__setitem__(name, out[0, 0].numel() if out.dim() > 2 else 1)  # noqa: E731
        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    weights = {name: model.get_parameter(name) for name in positions}
    used = {name: int(masks[name].sum()) if masks is not None else w.numel() for name, w in weights.items()}
    return sum(positions[name] * used[name] for name in positions)

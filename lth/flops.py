"""What a pruned network really computes and holds: multiply-accumulates of its Linear and Conv layers (for
Scratch-B's budget and the results lines), its parameter count as deployed, and how much faster it runs.

Channel pruning needs nothing special here: a removed channel's masks (`lth.channels.remove`) cover its row
and the columns of the layers that read it, so its MACs in the next layer are gone from the count too, and
the count equals that of the physically narrower network (a test checks it).
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from lth import masks as M
from lth.architecture import Architecture
from lth.inputs import Shape, call, filled
from lth.models import prunable_names


def macs(model: nn.Module, input_shape: Shape, masks: dict[str, torch.Tensor] | None = None) -> int:
    """MACs for one example. A layer's weight is used once per output position: 1 for a Linear layer on a vector,
    H×W for a 2-D conv, L for a 1-D conv or for a Linear layer on L tokens (a transformer's; for dict inputs, at the
    first training example's length, `lth.inputs.Fields`); with masks, only kept weights count. Biases,
    normalisation, activations, attention's products of activations and pooling are not counted, as is usual in the
    pruning literature."""
    positions: dict[str, int] = {}
    hooks = []
    for name in prunable_names(model):
        module = model.get_submodule(name.rpartition(".")[0])
        # An output's size over its channels (conv: [C, H, W]; Linear: [..., out]), the channels being the weight's rows.
        record = lambda m, args, out, name=name: positions.__setitem__(name, out[0].numel() // m.weight.shape[0])  # noqa: E731
        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            call(model, filled(input_shape, 1, 0))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    weights = {name: model.get_parameter(name) for name in positions}
    used = {name: int(masks[name].sum()) if masks is not None else w.numel() for name, w in weights.items()}
    return sum(positions[name] * used[name] for name in positions)


def dense_macs(architecture: Architecture) -> int:
    """The dense network's MACs per example, from shapes alone: built on the meta device, so it takes no memory
    and draws no init from the global generator. A forward pass that reads its inputs' values (a transformer's
    attention mask is checked for padding) cannot run there: that network is built on the CPU, its init drawn
    from a forked generator."""
    try:
        with torch.device("meta"):
            return macs(architecture.build(), architecture.input_shape)
    except (NotImplementedError, RuntimeError):
        with torch.random.fork_rng(devices=[]):
            return macs(architecture.build(), architecture.input_shape)


def parameters(model: nn.Module, followers: dict[str, tuple[str, ...]], masks: M.Masks) -> int:
    """Parameters of the (unpacked) network as deployed: the kept prunable weights and every other parameter,
    less the `followers` of removed channels (their biases and batch-norm scales and shifts)."""
    followers = {f: M.channels_alive(masks[layer]) for layer, names in followers.items() for f in names}
    total = 0
    for name, parameter in model.named_parameters():
        kept = masks.get(name, followers.get(name))
        total += parameter.numel() if kept is None else int(kept.sum())
    return total


@torch.no_grad()
def speedup(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...], batch: int, device: torch.device, repeats: int = 7) -> float:
    """How many times faster `pruned` runs a forward pass than `dense` on `device`, at a training batch in eval
    mode: the ratio of median times over `repeats` passes each, after two warm-up passes. A timing, so it
    varies from run to run (`lth.run_dir.TIMING_FIELDS`)."""
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(0)).to(device)

    def median_seconds(model: nn.Module) -> float:
        model = model.to(device).eval()
        times = []
        for i in range(repeats + 2):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    return median_seconds(dense) / median_seconds(pruned)

"""Output channels as the unit of pruning (the methods `channel`, `slimming`, `thinet`, `regression` and `apoz`): which
channels of a network can be removed on their own, what goes with a removed channel, and the physically narrower network that is
left. How layers depend on each other is read off the traced network by Torch-Pruning's `DependencyGraph`
(VainF et al., "DepGraph", CVPR 2023), which also slices the narrow network; this module only turns its groups
into lth's masks.

A removed channel is, as masks: the producing layer's output row, and the columns of the layers that read it
(a conv's input channel; the H×W columns a flattened feature map feeds a linear layer). Its bias and the
scale and shift of the batch norm after it are zeroed with it (`MaskedModule` does so after every step), so
the masked wide network computes exactly what the narrow one computes, its kept weights are the narrow one's
weights and `lth.flops.macs` of its masks are the narrow network's MACs.

Coupled channels: channels joined by a residual add (every conv that writes into a ResNet's stream) must be
removed together from every layer of the stream or not at all. lth leaves them alone and removes only
channels that one layer produces and other layers consume: in a ResNet, the first conv of each block (Li et
al. 2017, §4.2, "we only prune the first layer of each residual block"; Liu et al. 2019 prune ResNets the same
way). Output layers have no consumer and keep their channels (the classes).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from lth.architecture import Architecture
from lth.masks import Masks, channels_alive
from lth.models import prunable_names

_OUT = {nn.Linear: tp.prune_linear_out_channels, nn.Conv1d: tp.prune_conv_out_channels, nn.Conv2d: tp.prune_conv_out_channels}


@dataclass(frozen=True)
class Removable:
    """The output channels of one layer that can be removed on their own."""

    layer: str  # the producing layer's weight
    followers: tuple[str, ...]  # 1-D parameters indexed by its output channel: its bias, the next batch norm's scale and shift
    scale: str | None  # that batch norm's scale, by which Network Slimming ranks channels; None without batch norm
    consumers: tuple[tuple[str, tuple[tuple[int, ...], ...]], ...]  # (weight, the input columns each channel feeds)


def _kind(module: nn.Module):
    return next(fn for cls, fn in _OUT.items() if isinstance(module, cls))


def _graph(model: nn.Module, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    return tp.DependencyGraph().build_dependency(model, example_inputs=torch.zeros(1, *input_shape))


@functools.cache
def removable(architecture: Architecture) -> dict[str, Removable]:
    """Every layer of the (unpacked) network whose output channels can be removed alone, by weight name."""
    model = architecture.build()
    graph = _graph(model, architecture.input_shape)
    names = {module: name for name, module in model.named_modules()}
    out = {}
    for layer in prunable_names(model):
        module = model.get_submodule(layer.rpartition(".")[0])
        channels = module.weight.shape[0]
        followers, scale, consumers, coupled = [], None, [], False
        if module.bias is not None:
            followers.append(f"{names[module]}.bias")
        for item in graph.get_pruning_group(module, _kind(module), idxs=list(range(channels))):
            target, how = item.dep.target.module, item.dep.handler.__name__
            if target is module or names.get(target) is None:
                continue
            if isinstance(target, tuple(_OUT)):
                if how == "prune_out_channels":
                    coupled = True  # another layer writes the same channels: a residual add
                else:
                    per_channel = len(item.idxs) // channels
                    columns = tuple(tuple(int(i) for i in item.idxs[c * per_channel : (c + 1) * per_channel]) for c in range(channels))
                    consumers.append((f"{names[target]}.weight", columns))
            elif isinstance(target, nn.modules.batchnorm._BatchNorm) and target.affine:
                scale = f"{names[target]}.weight"
                followers += [scale, f"{names[target]}.bias"]
        if consumers and not coupled:
            out[layer] = Removable(layer, tuple(followers), scale, tuple(consumers))
    return out


def remove(masks: Masks, dead: dict[str, torch.Tensor], structure: dict[str, Removable]) -> Masks:
    """`masks` with the channels `dead[layer]` (bool per output channel) removed: their rows, and the columns
    of every layer that reads them."""
    out = {name: mask.clone() for name, mask in masks.items()}
    for layer, channels in dead.items():
        out[layer][channels] = False
        for consumer, columns in structure[layer].consumers:
            index = torch.tensor([i for c in channels.nonzero().flatten().tolist() for i in columns[c]], dtype=torch.long)
            out[consumer][:, index] = False
    return out


def random_like(masks: Masks, generator: torch.Generator, structure: dict[str, Removable]) -> Masks:
    """The random-pruning control for channels: as many channels kept in each layer as `masks` keeps, chosen at
    random (Frankle & Carbin 2019, §2, per channel rather than per weight)."""
    dense = {name: torch.ones_like(mask) for name, mask in masks.items()}
    dead = {}
    for layer in sorted(structure):
        kept = channels_alive(masks[layer])
        if kept.all():
            continue
        keep = torch.zeros_like(kept)
        keep[torch.randperm(len(kept), generator=generator)[: int(kept.sum())]] = True
        dead[layer] = ~keep
    return remove(dense, dead, structure)


def followers(structure: dict[str, Removable]) -> dict[str, tuple[str, ...]]:
    return {layer: r.followers for layer, r in structure.items() if r.followers}


def narrow(model: nn.Module, masks: Masks, structure: dict[str, Removable], input_shape: tuple[int, ...]) -> nn.Module:
    """A copy of the (unpacked, plain) network with the channels `masks` removed physically: narrower layers,
    the next layers' inputs sliced, batch norms and biases cut to the channels kept."""
    training = model.training
    model = copy.deepcopy(model)
    graph = _graph(model, input_shape)  # traces in eval mode, and leaves the network there
    for layer in structure:
        dead = (~channels_alive(masks[layer])).nonzero().flatten().tolist()
        if dead:
            module = model.get_submodule(layer.rpartition(".")[0])
            graph.get_pruning_group(module, _kind(module), idxs=dead).prune()
    return model.train(training)  # Lightning keeps a submodule's mode: one left in eval mode would train on running statistics


def removed(remaining: int, fraction: float, layers: int = 1) -> int:
    """How many of the `remaining` channels of `layers` layers ranked together a step of `fraction` removes: round(p × R),
    every layer keeping one. A criterion that chooses a set rather than scoring each channel asks it how large a set."""
    return min(round(fraction * remaining), remaining - layers)


def drop(scores: dict[str, torch.Tensor], masks: Masks, fractions: dict[str, float], strategy: str, structure: dict[str, Removable]) -> Masks:
    """Remove the lowest-scored remaining channels: a group of layers with R remaining channels and fraction p
    loses round(p × R) of them, as `lth.methods.magnitude` does with weights. `layerwise` ranks each layer
    alone; `global` ranks the layers that share a fraction together. Every layer keeps at least its best
    channel, so no layer is cut off. Ties go to the earlier channel."""
    groups: dict[object, list[str]] = {}
    for layer in scores:
        groups.setdefault(fractions[layer] if strategy == "global" else layer, []).append(layer)
    dead = {}
    for layers in groups.values():
        ranked = []
        for layer in layers:
            kept = channels_alive(masks[layer])
            score = scores[layer].detach().float().masked_fill(~kept, -torch.inf)
            score[int(torch.argmax(score))] = torch.inf  # its best channel stays
            ranked.append(score)
        flat = torch.cat(ranked)
        remaining = int(torch.isfinite(flat).sum()) + len(layers)
        n_dropped = int((flat == -torch.inf).sum()) + removed(remaining, fractions[layers[0]], len(layers))
        off = torch.zeros_like(flat, dtype=torch.bool)
        off[torch.sort(flat, stable=True).indices[:n_dropped]] = True
        dead.update(zip(layers, off.split([len(s) for s in ranked])))
    return remove(masks, dead, structure)

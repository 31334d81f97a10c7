"""Residual blocks as the unit of pruning (Sparse Structure Selection, the `sss` method): which modules of a network
are residual blocks, what goes with a removed block, and the shallower network that is left.

A residual block is a module with a `shortcut` child (lth's ResNets) or a `downsample` child (torchvision's), whose
output is relu(branch(x) + shortcut(x)); its branch is every other prunable layer inside it, each followed by a batch
norm. A removed block, as masks, is its branch's weights all masked; `MaskedModule` then zeroes the scale and shift
of the batch norm after each branch layer (a removed channel's followers), so the branch adds exactly 0 and the block
computes relu(shortcut(x)). The narrow network replaces the block by that (`Skip`): x itself where the shortcut is
the identity (x ≥ 0, the previous block's ReLU output), the projection where it is not. Torch-Pruning removes channels,
not layers, so this one change of depth is made here.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from lth.architecture import Architecture
from lth.channels import Removable
from lth.masks import Masks
from lth.models import prunable_names

SHORTCUTS = ("shortcut", "downsample")


@dataclass(frozen=True)
class Block:
    name: str  # the block module's name
    layers: tuple[str, ...]  # its branch's prunable weights, in order
    norms: tuple[str, ...]  # the batch norm after each; the last one's scale and shift multiply what the branch adds


class Skip(nn.Module):
    """A removed block: relu(shortcut(x)), what the block computes with its branch zeroed."""

    def __init__(self, shortcut: nn.Module | None):
        super().__init__()
        self.shortcut = shortcut if shortcut is not None else nn.Identity()

    def forward(self, x):
        return F.relu(self.shortcut(x))


def _shortcut(module: nn.Module) -> str | None:
    return next((name for name in SHORTCUTS if hasattr(module, name)), None)


@functools.cache
def of(architecture: Architecture) -> dict[str, Block]:
    """Every residual block of the (unpacked) network whose branch layers are each followed by a batch norm, by module
    name, in order."""
    model = architecture.build()
    prunable = set(prunable_names(model))
    out = {}
    for name, module in model.named_modules():
        shortcut = _shortcut(module)
        if not name or shortcut is None:
            continue
        layers, norms, waiting = [], [], False
        for child_name, child in module.named_modules():
            if not child_name or child_name.split(".")[0] == shortcut:
                continue
            if f"{name}.{child_name}.weight" in prunable:
                layers.append(f"{name}.{child_name}.weight")
                waiting = True
            elif waiting and isinstance(child, nn.modules.batchnorm._BatchNorm) and child.affine:
                norms.append(f"{name}.{child_name}")
                waiting = False
        if layers and len(norms) == len(layers):
            out[name] = Block(name, tuple(layers), tuple(norms))
    return out


def followers(found: dict[str, Block]) -> dict[str, Removable]:
    """Each branch layer with the batch norm after it: what `MaskedModule` zeroes when the layer's channels die."""
    return {layer: Removable(layer, (f"{norm}.weight", f"{norm}.bias"), f"{norm}.weight", ())
            for block in found.values() for layer, norm in zip(block.layers, block.norms)}


def alive(masks: Masks, block: Block) -> bool:
    return any(bool(masks[layer].any()) for layer in block.layers)


def remove(masks: Masks, dead: list[str], found: dict[str, Block]) -> Masks:
    out = {name: mask.clone() for name, mask in masks.items()}
    for name in dead:
        for layer in found[name].layers:
            out[layer][...] = False
    return out


def random_like(masks: Masks, generator: torch.Generator, found: dict[str, Block]) -> Masks:
    """The random-pruning control: as many blocks removed as `masks` removes, chosen at random."""
    dense = {name: torch.ones_like(mask) for name, mask in masks.items()}
    names = list(found)
    n_dead = sum(not alive(masks, found[b]) for b in names)
    dead = [names[i] for i in torch.randperm(len(names), generator=generator)[:n_dead].tolist()]
    return remove(dense, dead, found)


def narrow(model: nn.Module, masks: Masks, found: dict[str, Block]) -> nn.Module:
    """A copy of the (unpacked) network with each removed block replaced by its `Skip`."""
    model = copy.deepcopy(model)
    for name, block in found.items():
        if not alive(masks, block):
            parent, _, child = name.rpartition(".")
            module = model.get_submodule(name)
            model.get_submodule(parent).register_module(child, Skip(getattr(module, _shortcut(module))))
    return model

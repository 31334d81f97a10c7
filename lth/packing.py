"""K runs as one: the state of a network built with `pack=K` is its K members' states concatenated.

Every parameter, buffer (masks included) and elementwise optimizer state (momentum, Adam's moments) of a
packed network is its members' tensors stacked along dim 0 (see `lth.models`); scalars — batch norm's
`num_batches_tracked`, Adam's step count, the LR scheduler, the loops' progress — are shared, because
members of a pack train in lockstep on one schedule. So packing is `cat`, unpacking is `chunk`, and a
member's unpacked checkpoint is an ordinary single-run Lightning checkpoint.

Everything about packing but the packed layers themselves (`lth.models`: grouped convolutions, batched
linear maps) is here: how states and checkpoints pack and unpack, which runs may share a pack, and the
checkpoint I/O that keeps only single-run checkpoints on disk.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.plugins.io import CheckpointIO

from lth.run_dir import RunDir

if TYPE_CHECKING:
    from lth.module import MaskedModule
    from lth.training import Member


def pack_state(states: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: _cat([s[key] for s in states]) for key in states[0]}


def unpack_state(state: dict[str, Any], k: int) -> list[dict[str, Any]]:
    return [{key: _part(value, k, i) for key, value in state.items()} for i in range(k)]


def _cat(values: list[Any]) -> Any:
    if isinstance(values[0], torch.Tensor) and values[0].dim() > 0:
        return torch.cat(values)
    return values[0]


def _part(value: Any, k: int, i: int) -> Any:
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        return value.chunk(k)[i].clone()
    return value


def pack_checkpoint(members: list[dict[str, Any]]) -> dict[str, Any]:
    """One Lightning checkpoint for K members' checkpoints taken at the same step of the same schedule, whose
    optimizer states have the same entries (all empty, or all with momentum)."""
    packed = copy.copy(members[0])
    packed["state_dict"] = pack_state([m["state_dict"] for m in members])
    packed["optimizer_states"] = [_pack_optimizer(list(states)) for states in zip(*(m["optimizer_states"] for m in members))]
    packed["lth"] = {"members": [m.get("lth", {}) for m in members]}
    return packed


def unpack_checkpoint(packed: dict[str, Any], k: int) -> list[dict[str, Any]]:
    states = unpack_state(packed["state_dict"], k)
    optimizers = [_unpack_optimizer(o, k) for o in packed["optimizer_states"]]
    members = packed.get("lth", {}).get("members", [{}] * k)
    return [
        {**packed, "state_dict": states[i], "optimizer_states": [o[i] for o in optimizers], "lth": members[i]}
        for i in range(k)
    ]


def _pack_optimizer(states: list[dict[str, Any]]) -> dict[str, Any]:
    first = states[0]
    return {**first, "state": {p: pack_state([s["state"][p] for s in states]) for p in first["state"]}}


def _unpack_optimizer(state: dict[str, Any], k: int) -> list[dict[str, Any]]:
    parts = {p: unpack_state(s, k) for p, s in state["state"].items()}
    return [{**state, "param_groups": copy.deepcopy(state["param_groups"]), "state": {p: parts[p][i] for p in parts}} for i in range(k)]


# -- which runs train as one pack, and how they do -------------------------------------------------------------


# On a CPU a network this small cannot keep the cores busy in a step of its own, and Lightning's fixed cost
# per step (about 0.4 ms) is most of its time: packing it pays. Measured per run on 2 cores (README,
# Performance): the quickstart's MLP (15,000 MACs per example) and the MNIST-1D CNN (31,750) train about 3×
# faster in packs of 12; LeNet-300-100 (266,200) gains nothing, since a batched matmul of that size is
# slower than one plain one; ResNet-20 (41 million) loses half its speed to grouped convolutions.
CPU_PACK_MACS = 100_000


def auto_pack(macs: int) -> int:
    """How many runs to pack when the experiment does not say, for a network of `macs` per example. On a GPU,
    16: a ResNet-20 step leaves an H100 mostly idle, and 16 packed copies train ~10× the images per second
    of one (README, Performance); more gains little. On a CPU, 16 for networks of at most `CPU_PACK_MACS`,
    and 1 for larger ones, whose steps are compute-bound."""
    return 16 if torch.cuda.is_available() or macs <= CPU_PACK_MACS else 1


def pack_key(member: Member) -> tuple:
    """Members with equal keys can train in lockstep as one pack: same network and data shapes, same schedule
    and optimizer settings, at the same step, with optimizer states of the same origin (they share its
    scalars, such as Adam's step count)."""
    step = 0 if member.resume is None else RunDir.load(member.resume)["global_step"]
    run, module = member.run, member.module
    optimizer = member.arm.optimizer_origin(run.schedule.rewind_step, run.cfg.prune.rewind_optimizer)
    # A narrow network's widths are its own masks': it trains alone.
    alone = (run.cfg.run_id(), member.level, member.arm.name) if member.narrow else None
    return (run.cfg.model.name, run.cfg.data.name, run.cfg.data.batch_size, run.cfg.data.augment, run.schedule.val_size, module.schedule,
            repr(module.train_cfg), module.scale_l1, member.resume is None, step, optimizer, member.finished, alone)


def packs(members: list[Member], size: int) -> list[list[Member]]:
    groups: dict[tuple, list[Member]] = {}
    for member in members:
        groups.setdefault(pack_key(member), []).append(member)
    return [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]


def pack_modules(modules: list[MaskedModule], build: Callable[[int], MaskedModule]) -> MaskedModule:
    """One module, built by `build(pack)`, training `modules` (equal schedules) from their weights and masks."""
    packed = build(len(modules))
    packed.schedule, packed.train_cfg, packed.scale_l1 = modules[0].schedule, modules[0].train_cfg, modules[0].scale_l1
    packed.load_state_dict(pack_state([m.state_dict() for m in modules]))
    return packed


class MemberCheckpoints(CheckpointIO):
    """Lightning's checkpoint I/O for a pack: saving `name` writes each member's own single-run checkpoint
    (`Member.file(name)`); loading packs the members' own checkpoints. On disk there are only single-run
    checkpoints, so a run resumes whatever it is packed with next time."""

    def __init__(self, members: list[Member]):
        super().__init__()
        self.members = members

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        for member, part in zip(self.members, unpack_checkpoint(checkpoint, len(self.members))):
            RunDir.save(part, member.file(str(path)))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return pack_checkpoint([RunDir.load(m.resume) for m in self.members])

    def remove_checkpoint(self, path) -> None:
        raise NotImplementedError("lth never deletes checkpoints")

"""K runs as one: the state of a network built with `pack=K` is its K members' states concatenated.

Every parameter, buffer (masks included) and elementwise optimizer state (momentum, Adam's moments) of a
packed network is its members' tensors stacked along dim 0 (see `lth.models`); scalars — batch norm's
`num_batches_tracked`, Adam's step count, the LR scheduler, the loops' progress — are shared, because
members of a pack train in lockstep on one schedule. So packing is `cat`, unpacking is `chunk`, and a
member's unpacked checkpoint is an ordinary single-run Lightning checkpoint.

Here: how states and checkpoints pack and unpack, and how many runs to pack. The packed layers are in
`lth.models` (grouped convolutions, batched linear maps); which members may share a pack, and the checkpoint
I/O that keeps only single-run checkpoints on disk, in `lth.training`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch


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


def member_states(checkpoint: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The K members' own entries of a pack's checkpoint (`lth` → `members`), made if absent: what the module (its
    validation history) and a training hook (its state) keep per member, saved with each member's own checkpoint and
    read back from it, so that a member resumes with its own state however it is packed next time."""
    return checkpoint.setdefault("lth", {}).setdefault("members", [{} for _ in range(k)])


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

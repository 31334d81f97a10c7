"""`lth export RUN_DIR --level K [--arm A] --out FILE [--sparse]`: a trained (level, arm) as a network a user can
load without lth's masks, checked against the masked network it came from.

The file holds the model's registry name, input shape and class count, and its plain `state_dict` (pruned
weights exactly 0, no mask buffers); `load(FILE)` rebuilds it. Under a channel method (`channel`, `slimming`,
`thinet`, `regression`, `apoz`) the network is physically narrower: removed channels are gone, the next layers'
inputs sliced and batch norms cut (`lth.channels.narrow`, with Torch-Pruning); under `sss` it is shallower, each
removed residual block replaced by its shortcut (`lth.blocks.narrow`). The file then also holds the masks the
narrowing follows and which unit it removed. `--sparse` adds a compressed copy of each pruned weight: CSR (rows are output units; a conv
weight is flattened to [out, in·k·k]) for unstructured masks; for 2:4 masks on a CUDA device with sparse
tensor cores, `torch.sparse.to_sparse_semi_structured` of `semi_structured_layout`, the layout those cores
multiply at up to twice the dense rate, for every layer whose shape the kernel accepts (the others, and
every layer elsewhere, get the CSR copy, and a message says why).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lth import blocks, channels, config
from lth.architecture import Architecture
from lth.arms import ARMS
from lth.data import dataset
from lth.imp import Run
from lth.inputs import Fields, call, drawn, shape_of
from lth.models import logits
from lth.ranking import Blocks, Channels, NMGroups
from lth.run_dir import FINAL, RunDir, RunError

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")  # stable enough for to_sparse_csr and @


def _semi_structured_available() -> str | None:
    """None if 2:4 semi-structured tensors can be made here, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if torch.cuda.get_device_capability() < (8, 0):
        return "the GPU has no sparse tensor cores (compute capability below 8.0)"
    return None


def semi_structured_layout(weight: torch.Tensor) -> torch.Tensor:
    """The [out, kernel positions × in] matrix a 2:4 kernel multiplies, input channels innermost (NVIDIA ASP's
    permutation of a conv weight to (out, kh, kw, in)): each run of four along a row is one group of
    `lth.ranking.groups_of`, the groups the nm masks keep two of. Flattening [out, in, kh, kw] as it is would
    run the groups across kernel positions instead."""
    return weight.movedim(1, -1).flatten(1).contiguous()


def semi_structured_problem(shape: tuple[int, int], dtype: torch.dtype = torch.float16) -> str | None:
    """Why torch's 2:4 kernels reject a matrix of this shape (both sides a multiple of their minimum), or None."""
    need = torch.sparse.SparseSemiStructuredTensorCUTLASS._DTYPE_SHAPE_CONSTRAINTS[dtype]
    rows, cols = need.sparse_min_rows, need.sparse_min_cols
    if shape[0] % rows or shape[1] % cols:
        return f"its 2:4 matrix is {shape[0]}×{shape[1]}, and the kernels need multiples of {rows}×{cols}"
    return None


def export(run_dir: Path, level: int, arm: str, out: Path, sparse: bool) -> dict[str, Any]:
    """Write the export and return what was checked: the largest output difference and the weights kept."""
    directory = RunDir(run_dir)
    cfg = directory.experiment()
    final = directory.arm(level, arm) / FINAL
    if not final.is_file():
        raise RunError(f"{final} does not exist: level {level} of {arm} has not finished training")
    if out.is_dir():
        raise RunError(f"--out {out} is a directory; name the file to write")
    if not os.access(next(p for p in (out.parent, *out.parents) if p.exists()), os.W_OK):
        raise RunError(f"--out {out}: its folder is not writable by this user")
    spec = dataset(cfg.data)
    run = Run(cfg, directory, config.steps(cfg), progress=False)
    unit = run.net.unit
    # An arm that trained the narrow network (`Arm.narrow`) has its chain's masks as its wide masks.
    wide_masks = directory.load(directory.mask(level, ARMS[arm].chain())) if level > 0 and ARMS[arm].narrow(unit) else None
    masked = run.build_module(0, narrow=wide_masks)
    masked.load_state_dict(directory.load(final)["state_dict"])
    masked.eval()
    masks = {name: mask.clone() for name, mask in masked.masks().items()}
    plain = {k: v.clone() for k, v in masked.model.state_dict().items() if not k.endswith("_mask")}
    shape = spec.input_shape.listed() if isinstance(spec.input_shape, Fields) else spec.input_shape
    payload: dict[str, Any] = {"model": cfg.model.name, "kwargs": cfg.model.kwargs, "input_shape": shape, "num_classes": spec.num_classes,
                               "state_dict": plain}
    if unit.removes_channels:  # which narrowing `load` follows
        payload["unit"] = "blocks" if isinstance(unit, Blocks) else "channels"
    if wide_masks is not None:  # trained narrow: its state is the narrow network's
        payload["masks"] = wide_masks
    elif unit.removes_channels:  # the masked wide network, made narrow here
        narrow = unit.narrow(load(payload), masks, spec.input_shape)
        payload["masks"], payload["state_dict"] = masks, narrow.state_dict()
        plain = payload["state_dict"]
    network = load(payload)  # rebuilt from the payload as a user's `load(FILE)` will, so the checks below cover that path

    x = drawn(spec.input_shape, 64, torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = masked(x)[:, 0]
        # Relative to the logits' scale: a narrow network sums the same products in another order.
        difference = float((logits(call(network, x)) - reference).abs().max()) / max(1.0, float(reference.abs().max()))
    if difference > 1e-5:
        raise RunError(f"the exported network's outputs differ from the masked network's by {difference:.2e} (relative)")
    kept = sum(int(m.sum()) for m in masks.values())
    nonzero = sum(int(plain[name].count_nonzero()) for name in masks if name in plain)  # a removed block's layers are gone
    if nonzero > kept:
        raise RunError(f"{nonzero} nonzero prunable weights, more than the {kept} the masks keep")
    prunable = sum(m.numel() for m in payload.get("masks", masks).values())
    summary = {"max_output_difference": difference, "weights_kept": kept, "prunable_weights": prunable,
               "parameters": sum(p.numel() for p in network.parameters())}
    if unit.removes_channels and sum(plain[name].numel() for name in masks if name in plain) != sum(int(m.sum()) for m in payload["masks"].values()):
        raise RunError("the narrow network's weights are not the ones its masks keep")
    if sparse:
        two_four = isinstance(unit, NMGroups) and (unit.n, unit.m) == (2, 4)
        device = _semi_structured_available() if two_four else "not a 2:4 mask"
        compressed, skipped = {}, {}
        for name in masks:
            weight = plain[name]
            layout = semi_structured_layout(weight)
            why_not = device or semi_structured_problem(tuple(layout.shape))
            if why_not is None:
                compressed[name] = torch.sparse.to_sparse_semi_structured(layout.cuda().half())
                if not torch.equal(compressed[name].to_dense().cpu(), layout.half()):
                    raise RunError(f"the 2:4 semi-structured copy of {name} does not reproduce it")
                continue
            compressed[name] = weight.flatten(1).to_sparse_csr()
            if not torch.equal(compressed[name].to_dense(), weight.flatten(1)):
                raise RunError(f"the CSR copy of {name} does not reproduce it")
            if two_four:
                skipped[name] = why_not
        payload["sparse"] = compressed
        if skipped:
            summary["semi_structured_skipped"] = skipped
    out.parent.mkdir(parents=True, exist_ok=True)
    RunDir.save(payload, out)
    return summary


def sparse_copies(exported: dict[str, Any] | Path) -> dict[str, torch.Tensor]:
    """The compressed weights of a `--sparse` export, by layer name, ready to multiply. torch fills a semi-structured
    tensor class's table of operations when the first one is made in a process, and unpickling makes none: the first
    product with one read from a file fails (AttributeError: ... has no attribute 'SPARSE_DISPATCH'; torch 2.11 on
    an H200). Filled here."""
    copies = _payload(exported)["sparse"]
    for copy in copies.values():
        if isinstance(copy, torch.sparse.SparseSemiStructuredTensor):
            type(copy)._load_dispatch_table()
    return copies


def _payload(exported: dict[str, Any] | Path) -> dict[str, Any]:
    return exported if isinstance(exported, dict) else torch.load(exported, weights_only=False)


def architecture(exported: dict[str, Any]) -> Architecture:
    """What builds an export's network at its full widths: lth's own model, or a user's by import path."""
    return Architecture(exported["model"], shape_of(exported["input_shape"]), exported["num_classes"], tuple(exported.get("kwargs", {}).items()))


def load(exported: dict[str, Any] | Path) -> nn.Module:
    """The network of an export (a file or its loaded payload), in eval mode: the model built as `architecture` says,
    made narrow as its masks say when it lost channels or residual blocks, with its weights."""
    exported = _payload(exported)
    built = architecture(exported)
    network = built.build()
    if "masks" in exported:  # files written before residual blocks could go name no unit: channels
        unit = Blocks(blocks.of(built)) if exported.get("unit") == "blocks" else Channels(channels.removable(built))
        network = unit.narrow(network, exported["masks"], tuple(exported["input_shape"]))
    network.load_state_dict(exported["state_dict"])
    return network.eval()

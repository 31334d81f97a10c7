"""`lth export RUN_DIR --level K [--arm A] --out FILE [--sparse]`: a trained (level, arm) as a network a user can
load without lth's masks, checked against the masked network it came from.

The file holds the model's registry name, input shape and class count, and its plain `state_dict` (pruned
weights exactly 0, no mask buffers), so `MODELS[name](input_shape, num_classes).load_state_dict(...)`
rebuilds it. `--sparse` adds a compressed copy of each pruned weight: CSR (rows are output units; a conv
weight is flattened to [out, in·k·k]) for unstructured masks; for `nm` masks on a CUDA device with sparse
tensor cores, `torch.sparse.to_sparse_semi_structured`, the layout those cores multiply at up to twice the
dense rate (elsewhere the CSR copy, and a message saying why).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from lth import config
from lth.data import DATASETS
from lth.imp import Run
from lth.models import MODELS
from lth.run_dir import FINAL, RunDir, RunError

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")  # stable enough for to_sparse_csr and @


def _semi_structured_available() -> str | None:
    """None if 2:4 semi-structured tensors can be made here, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if torch.cuda.get_device_capability() < (8, 0):
        return "the GPU has no sparse tensor cores (compute capability below 8.0)"
    return None


def export(run_dir: Path, level: int, arm: str, out: Path, sparse: bool) -> dict[str, Any]:
    """Write the export and return what was checked: the largest output difference and the weights kept."""
    directory = RunDir(run_dir)
    if not directory.config.is_file():
        raise RunError(f"{run_dir} is not an lth run directory (no config.yaml)")
    final = directory.arm(level, arm) / FINAL
    if not final.is_file():
        raise RunError(f"{final} does not exist: level {level} of {arm} has not finished training")
    cfg = config.load(directory.config)
    spec = DATASETS[cfg.data.name]
    masked = Run(cfg, directory, config.Schedule.of(cfg), progress=False).build_module(0)
    masked.load_state_dict(directory.load(final)["state_dict"])
    masked.eval()
    masks = {name: mask.clone() for name, mask in masked.masks().items()}
    plain = {k: v.clone() for k, v in masked.model.state_dict().items() if not k.endswith("_mask")}
    network = MODELS[cfg.model.name](spec.input_shape, spec.num_classes)
    network.load_state_dict(plain)
    network.eval()

    x = torch.randn(64, *spec.input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = float((network(x) - masked(x)[:, 0]).abs().max())
    if difference > 1e-5:
        raise RunError(f"the exported network's outputs differ from the masked network's by {difference:.2e}")
    kept = sum(int(m.sum()) for m in masks.values())
    nonzero = sum(int(plain[name].count_nonzero()) for name in masks)
    if nonzero > kept:
        raise RunError(f"{nonzero} nonzero prunable weights, more than the {kept} the masks keep")

    payload: dict[str, Any] = {"model": cfg.model.name, "input_shape": spec.input_shape, "num_classes": spec.num_classes, "state_dict": plain}
    summary = {"max_output_difference": difference, "weights_kept": kept, "prunable_weights": sum(m.numel() for m in masks.values())}
    if sparse:
        why_not = _semi_structured_available() if cfg.prune.method == "nm" else "not an nm mask"
        compressed = {}
        for name in masks:
            weight = plain[name]
            if why_not is None:
                compressed[name] = torch.sparse.to_sparse_semi_structured(weight.flatten(1).cuda().half())
            else:
                compressed[name] = weight.flatten(1).to_sparse_csr()
                if not torch.equal(compressed[name].to_dense(), weight.flatten(1)):
                    raise RunError(f"the CSR copy of {name} does not reproduce it")
        payload["sparse"] = compressed
        if cfg.prune.method == "nm" and why_not is not None:
            summary["semi_structured_skipped"] = why_not
    out.parent.mkdir(parents=True, exist_ok=True)
    RunDir.save(payload, out)
    return summary

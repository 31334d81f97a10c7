"""Inference speed of exported networks (`lth export`): the dense network against the pruned one.

    lth export RUN_DIR --level K --out ticket.pt [--sparse]
    python benchmarks/inference.py ticket.pt [more.pt ...] [--json FILE]

For a weight-level export (`--sparse`): the plain network with its masked dense weights ("dense"), and the
same network with every Linear layer multiplying by its CSR copy (kind "csr"; convolutions stay dense:
PyTorch has no sparse convolution); the two must compute the same outputs within 1e-5 on a batch, or the
benchmark stops. For a channel-pruned export: the network at its full widths ("dense"; its weights do not
change its speed) against the physically narrower one (kind "narrow"), whose outputs `lth export` checked
against the masked network.
Latency is the median over `--repeats` forward passes at batch 1; throughput is images per second at batch
256; both after warm-up, in eval mode without gradients, on this process's threads. On a GPU with sparse
tensor cores an nm export would be the place for 2:4 semi-structured matmuls; this measures the CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lth.export import architecture, load  # noqa: E402
from lth.flops import macs  # noqa: E402
from lth.models import logits  # noqa: E402

warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class CSRLinear(nn.Module):
    """y = x Wᵀ + b with W in CSR: (W xᵀ)ᵀ, one sparse-dense product."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (self.weight @ x.T).T
        return y if self.bias is None else y + self.bias


def networks(path: Path) -> tuple[nn.Module, nn.Module, dict, str]:
    """The dense network, the pruned one, the export and the pruned one's kind."""
    exported = torch.load(path, weights_only=False)
    dense = architecture(exported).build().eval()
    if "masks" in exported:
        return dense, load(exported), exported, "narrow"
    if "sparse" not in exported:
        raise SystemExit(f"{path}: no sparse copies; export it with `lth export ... --sparse`")
    dense.load_state_dict(exported["state_dict"])
    sparse = copy.deepcopy(dense)
    for name, csr in exported["sparse"].items():
        owner_name = name.rpartition(".")[0]
        owner = sparse.get_submodule(owner_name)
        if isinstance(owner, nn.Linear) and csr.layout == torch.sparse_csr:
            parent_name, _, attr = owner_name.rpartition(".")
            setattr(sparse.get_submodule(parent_name) if parent_name else sparse, attr, CSRLinear(csr, owner.bias))
    return dense, sparse, exported, "csr"


def latency_ms(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    times = []
    with torch.no_grad():
        for i in range(repeats + 10):
            start = time.perf_counter()
            model(x)
            if i >= 10:
                times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def throughput(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        for _ in range(3):
            model(x)
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
    return len(x) * repeats / (time.perf_counter() - start)


def measure(path: Path, repeats: int) -> dict:
    dense, pruned, exported, kind = networks(path)
    shape = tuple(exported["input_shape"])
    g = torch.Generator().manual_seed(0)
    batch = torch.randn(256, *shape, generator=g)
    difference = None
    if kind == "csr":
        with torch.no_grad():
            difference = float((logits(dense(batch)) - logits(pruned(batch))).abs().max())
        if difference > 1e-5:
            raise SystemExit(f"{path}: the sparse network's outputs differ from the dense one's by {difference:.2e}")
        masks = {n: exported["state_dict"][n] != 0 for n in exported["sparse"]}
        macs_kept = macs(dense, shape, masks)
    else:
        masks = exported["masks"]
        macs_kept = macs(pruned, shape)
    result = {
        "export": path.name, "model": exported["model"], "kind": kind,
        "weights_kept": sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values()),
        "macs_dense": macs(dense, shape), "macs_kept": macs_kept, "max_output_difference": difference,
        "latency_ms_dense": latency_ms(dense, batch[:1], repeats), "latency_ms_pruned": latency_ms(pruned, batch[:1], repeats),
        "images_per_s_dense": throughput(dense, batch, repeats // 4), "images_per_s_pruned": throughput(pruned, batch, repeats // 4),
    }
    result["latency_speedup"] = result["latency_ms_dense"] / result["latency_ms_pruned"]
    result["throughput_speedup"] = result["images_per_s_pruned"] / result["images_per_s_dense"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--json", type=Path, help="also write every figure printed here")
    args = parser.parse_args(argv)
    results = [measure(path, args.repeats) for path in args.exports]
    print(f"{'export':<28} {'kind':<6} {'kept':>7} {'MACs kept':>10} {'batch 1 ms dense/pruned':>22} {'×':>5} {'batch 256 img/s dense/pruned':>27} {'×':>5}")
    for r in results:
        print(
            f"{Path(r['export']).name:<28} {r['kind']:<6} {r['weights_kept']:>7.2%} {r['macs_kept'] / r['macs_dense']:>10.2%} "
            f"{r['latency_ms_dense']:>10.3f} / {r['latency_ms_pruned']:<9.3f} {r['latency_speedup']:>5.2f} "
            f"{r['images_per_s_dense']:>12,.0f} / {r['images_per_s_pruned']:<12,.0f} {r['throughput_speedup']:>5.2f}"
        )
    if args.json:
        machine = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

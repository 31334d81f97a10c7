"""2:4 semi-structured matmuls against dense ones on a GPU with sparse tensor cores (Ampere and later).

    python benchmarks/sparse24.py [--json FILE]

Weights pruned to 2:4 by lth's own ranking (`lth.ranking.NMGroups`, as `prune.method: nm` prunes), in fp16,
multiplied at batches 256 to 4096 by `torch.sparse.to_sparse_semi_structured` copies and by the dense masked
weights; the outputs must agree within fp16 rounding. The layer sizes are square matrices the kernels accept
(multiples of 32×64): the Linear layers of lth's shipped networks do not (`lth.export.semi_structured_problem`).
Without such a GPU it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lth.export import semi_structured_layout, semi_structured_problem  # noqa: E402
from lth.ranking import NMGroups  # noqa: E402


def milliseconds(x: torch.Tensor, weight, repeats: int = 50) -> float:
    """The mean time of x @ weightᵀ on the GPU, after warm-up."""
    for _ in range(5):
        F.linear(x, weight)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        F.linear(x, weight)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0):
        print("no GPU with sparse tensor cores here: nothing to time")
        return 0
    rows = []
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}\n| weight | batch | dense ms | 2:4 ms | dense ÷ 2:4 |\n|---|---|---|---|---|")
    for size in (1024, 4096, 8192):
        g = torch.Generator().manual_seed(0)
        weight = torch.randn(size, size, generator=g)
        mask = NMGroups(2, 4).keep({"w": weight.abs()}, {"w": torch.ones_like(weight, dtype=torch.bool)}, {"w": 0.5}, "global")["w"]
        layout = semi_structured_layout(weight * mask)
        assert semi_structured_problem(tuple(layout.shape)) is None
        dense = layout.cuda().half()
        sparse = torch.sparse.to_sparse_semi_structured(dense)
        for batch in (256, 1024, 4096):
            x = torch.randn(batch, size, device="cuda", dtype=torch.float16)
            torch.testing.assert_close(F.linear(x, sparse), F.linear(x, dense), rtol=1e-2, atol=1e-1)
            d, s = milliseconds(x, dense), milliseconds(x, sparse)
            rows.append({"size": size, "batch": batch, "dense_ms": d, "sparse_ms": s, "speedup": d / s})
            print(f"| {size}×{size} | {batch} | {d:.3f} | {s:.3f} | {d / s:.2f}× |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

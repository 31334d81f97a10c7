"""A fingerprint of everything a run computed: every results line but its timing, and a SHA-256 of every
tensor in every mask file and checkpoint (weights, masks, optimizer state) with its step.

    python tests/golden/fingerprint.py record   # rewrite tests/golden/tiny_all_arms.json

Recorded when results change on purpose (say why in the commit); `tests/test_golden.py` compares a fresh
run against the recording, which is how a refactoring proves that it changed no result. On the build it was
recorded with (`build()`: torch's version and the CPU kernels it dispatches to, AVX2 or AVX512), bit for bit; on any
other build (a cluster's CUDA torch, another CPU's kernels: AVX512 and AVX2 round a loss differently in its last bits), where
float rounding differs and a ReLU network amplifies it, within `TOLERANCES` (`within_tolerance`).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

from lth.run_dir import TIMING_FIELDS, RunDir

RECORDING = Path(__file__).with_name("tiny_all_arms.json")
ARGS = [
    "--seed=0", "--model=mnist1d_mlp", "--data.name=synthetic", "--data.batch_size=64", "--train.optimizer=sgd",
    "--train.lr=0.05", "--train.momentum=0.9", "--train.weight_decay=0.0005", "--train.duration=3ep",
    "--train.eval_every=5it", "--prune.fraction=0.5", "--prune.levels=2", "--prune.rewind=7it", "--name=golden",
    "--arms=[ticket,reinit,random_prune,scratch_b,finetune,lr_rewind]",
    # Recorded one run at a time: packing changes float rounding, which bit-exact hashes would see
    # (test_packing checks packing itself, in float64).
    "--pack=1",
]


def _tensors(value, prefix=""):
    if isinstance(value, torch.Tensor):
        yield prefix, value
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _tensors(value[key], f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{prefix}/{i}")


def _digest(obj) -> str:
    digest = hashlib.sha256()
    for name, tensor in _tensors(obj):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def fingerprint(run_dir: Path) -> dict:
    rows = RunDir(run_dir).rows()
    files = {}
    for path in sorted(run_dir.rglob("*")):
        if path.suffix in (".ckpt", ".pt"):
            obj = torch.load(path, map_location="cpu", weights_only=False)
            if path.suffix == ".ckpt":
                obj = {"global_step": obj["global_step"], "state_dict": obj["state_dict"], "optimizer_states": obj["optimizer_states"]}
            files[str(path.relative_to(run_dir))] = _digest(obj)
    return {"rows": [{k: v for k, v in r.to_json().items() if k not in TIMING_FIELDS} for r in rows], "files": files}


# On another build: what a refactoring must still reproduce. Exactly: what no rounding can change (the arms,
# levels, seeds, step counts, the share of weights kept). Within a tolerance: what a reordering of float sums
# can move. Per-layer shares under one global threshold (near-equal magnitudes swap sides) and the MACs and
# parameter counts that follow them; accuracies of this tiny network on 256 examples, where one example is
# 0.004 and a change of rounding moved the quickstart's means by up to 0.025 (README, packing). The bounds are
# chosen, not measured on another build (none was at hand; one thread against two changes nothing here): a
# broken refactoring moves these by far more, or changes an exact field. The early-stop step is not compared.
EXACT = ("level", "arm", "seed", "init_seed", "run_id", "weights_remaining", "steps_trained", "rewind_step", "rewind_optimizer")
TOLERANCES = {"test_acc": 0.1, "test_acc_at_early_stop": 0.1, "best_val_acc": 0.1, "early_stop_val_acc": 0.1}
RELATIVE = {"macs": 0.05, "parameters": 0.05}
PER_LAYER = 0.05


def within_tolerance(now: dict, recorded: dict) -> list[str]:
    """What differs beyond `EXACT`, `TOLERANCES`, `RELATIVE` and `PER_LAYER` between two fingerprints (empty: none)."""
    problems = []
    if sorted(now["files"]) != sorted(recorded["files"]):
        problems.append(f"files differ: {sorted(set(now['files']) ^ set(recorded['files']))}")
    if len(now["rows"]) != len(recorded["rows"]):
        return problems + [f"{len(now['rows'])} results lines, recorded {len(recorded['rows'])}"]
    for a, b in zip(now["rows"], recorded["rows"]):
        where = f"level {b['level']} {b['arm']}"
        problems += [f"{where}: {k} {a[k]!r}, recorded {b[k]!r}" for k in EXACT if a[k] != b[k]]
        problems += [f"{where}: {k} {a[k]}, recorded {b[k]} (tolerance {t})" for k, t in TOLERANCES.items() if abs(a[k] - b[k]) > t]
        problems += [f"{where}: {k} {a[k]}, recorded {b[k]} (relative tolerance {t})" for k, t in RELATIVE.items() if abs(a[k] - b[k]) > t * b[k]]
        layers = b["weights_remaining_per_layer"]
        problems += [f"{where}: {n} keeps {a['weights_remaining_per_layer'].get(n)}, recorded {v}" for n, v in layers.items()
                     if abs(a["weights_remaining_per_layer"].get(n, -1) - v) > PER_LAYER]
    return problems


def build() -> dict[str, str]:
    """What decides float rounding on a CPU: torch's build and the vector kernels it chose for this processor."""
    return {"torch": torch.__version__, "cpu": torch.backends.cpu.get_cpu_capability()}


def run(out_dir: Path) -> Path:
    from lth import config
    from lth.imp import run_experiments

    (run,) = run_experiments(config.load_seeds(None, ARGS + [f"--out_dir={out_dir}"]), progress=False)
    return run.dir.root


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        recorded = fingerprint(run(Path(tmp)))
    recorded.update(build())
    RECORDING.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    print(f"wrote {RECORDING}")

"""`lth sensitivity RUN_DIR`: which layers can lose the most weights (Li et al. 2017, "Pruning Filters for
Efficient ConvNets", §3.2 and Figure 2; Han et al. 2015, Figure 5). From the ticket's trained network at a level,
each prunable layer alone is pruned at each fraction, the others left as they are, with no retraining, and the
test accuracy measured.

What is removed is the f smallest-magnitude weights of the layer that the level kept (`magnitude`), or its f
lowest-L1 output channels (`channel`, the layers whose channels can be removed alone, `lth.channels`). The
copies are evaluated as training packs them (`lth.packing.auto_pack`): 16 at a time as one packed network
(`lth.models`) on a GPU, where ResNet-20's 22 layers × 9 fractions are 198 networks but 13 passes over the test
set, and for the small MNIST-1D networks on a CPU; one at a time for larger ones on a CPU, where grouped
convolutions are slower than a loop. Results go to `RUN_DIR/sensitivity.jsonl`, a line per (level, method,
layer, fraction) appended as each pack finishes: a rerun measures only what is missing and leaves the file as
it is, and a killed one resumes.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lth import channels, config
from lth.data import DataModule, EvalBatches, dataset, load_split
from lth.files import atomic_write, save_figure
from lth.inputs import call, side_by_side, size
from lth.masks import channels_alive
from lth.models import logits as network_logits
from lth.models import prunable_names
from lth.network import Network
from lth.packing import pack_state
from lth.run_dir import FINAL, RunDir, RunError, read_lines

METHODS = ("magnitude", "channel")
FRACTIONS = [round(0.1 * i, 1) for i in range(1, 10)]
# Examples per forward pass. ResNet-20 at 1,000 (a 65 MB activation per layer) evaluated 3× slower than at 250 on
# 2 CPU cores (README, "Which layers can lose the most"); fully connected networks are indifferent.
BATCH = 250


def prune_one(state: dict[str, torch.Tensor], layer: str, fraction: float, method: str) -> dict[str, torch.Tensor]:
    """The network `state` (masked weights, exact zeros where pruned) with `fraction` of `layer`'s kept weights, or
    of its output channels, removed; every other tensor unchanged."""
    weight = state[layer]
    kept = weight != 0
    if method == "magnitude":
        scores, units = weight.abs()[kept], kept
    else:
        units = channels_alive(kept)
        scores = weight.abs().flatten(1).sum(1)[units]
    remove = round(fraction * len(scores))
    pruned = dict(state)
    if remove:
        order = torch.argsort(scores, stable=True)[:remove]  # the smallest, the first on ties
        flat = torch.zeros(len(scores), dtype=torch.bool)
        flat[order] = True
        gone = torch.zeros_like(units)
        gone[units] = flat
        shape = gone if method == "magnitude" else gone.view(-1, *[1] * (weight.dim() - 1))
        pruned[layer] = torch.where(shape, torch.zeros((), dtype=weight.dtype), weight)
    return pruned


def check(run_dir: Path, level: int, fractions: list[float], method: str) -> tuple[config.Experiment, Path]:
    """Everything that can be wrong, before any work: one line each."""
    directory = RunDir(run_dir)
    cfg = directory.experiment()
    final = directory.arm(level, "ticket") / FINAL
    if not final.is_file():
        raise RunError(f"--level {level}: {final} does not exist; that level of the ticket has not finished training")
    if method not in METHODS:
        raise config.ConfigError(f"--method: one of {', '.join(METHODS)}, got {method!r}")
    if not fractions or any(not 0 < f < 1 for f in fractions):
        raise config.ConfigError(f"--fractions: each must lie in (0, 1), got {fractions}")
    if dataset(cfg.data).stream:
        raise config.ConfigError("lth sensitivity: evaluates on in-memory data, and these images stream from their files")
    if method == "channel" and not layers(cfg, method):
        raise config.ConfigError(f"--method channel: {cfg.model.name} has no layer whose output channels can be removed alone")
    return cfg, final


def layers(cfg: config.Experiment, method: str) -> list[str]:
    architecture = Network.of(cfg).architecture
    with torch.device("meta"):
        names = prunable_names(architecture.build())
    if method == "magnitude":
        return names
    removable = channels.removable(architecture)
    return [n for n in names if n in removable]


def run(run_dir: Path, level: int, fractions: list[float], method: str) -> Path:
    """Measure every (layer, fraction) of `level` not yet in `sensitivity.jsonl`; write the report; its path."""
    cfg, final = check(run_dir, level, fractions, method)
    directory = RunDir(run_dir)
    ledger = run_dir / "sensitivity.jsonl"
    done = {(r["level"], r["method"], r["layer"], r["fraction"]) for _, r in read_lines(ledger)} if ledger.exists() else set()
    state = {k[len("model."):]: v for k, v in directory.load(final)["state_dict"].items() if k.startswith("model.")}
    masks = {k[: -len("_mask")]: v for k, v in state.items() if k.endswith("_mask")}
    plain = {k: v * masks[k] if k in masks else v for k, v in state.items() if not k.endswith("_mask")}
    every = [(layer, f) for layer in layers(cfg, method) for f in fractions]
    spec, val_size = dataset(cfg.data), config.steps(cfg).val_size
    directory.same_data(DataModule(spec, cfg.data.root, BATCH, val_size, [cfg.seed]).identity(), cfg.data.root)  # measured on its own data
    split = load_split(spec, cfg.data.root, val_size)
    batches = EvalBatches(split.arrays["x_test"], split.arrays["y_test"], BATCH, split.normalise)
    # The same packs on every run on one kind of device, the missing lines' packs evaluated whole: a resumed run
    # computes exactly what an uninterrupted one did (a pack's size changes float rounding).
    size = Network.of(cfg).pack(None)
    for start in range(0, len(every), size):
        pack = every[start : start + size]
        if all((level, method, layer, f) in done for layer, f in pack):
            continue
        pruned = [prune_one(plain, layer, f, method) for layer, f in pack]
        for (layer, f), network, accuracy in zip(pack, pruned, evaluate(pruned, cfg, batches)):
            if (level, method, layer, f) in done:
                continue
            directory.append_line(ledger, {"level": level, "method": method, "layer": layer, "fraction": f, "test_acc": accuracy,
                                           "layer_weights_kept": int((network[layer] != 0).sum()), "layer_weights": plain[layer].numel()})
    rows = [r for _, r in read_lines(ledger) if r["level"] == level and r["method"] == method]
    return write_report(rows, run_dir / "sensitivity", evaluate([plain], cfg, batches)[0])


@torch.no_grad()
def evaluate(states: list[dict[str, torch.Tensor]], cfg: config.Experiment, batches: EvalBatches) -> list[float]:
    """Test accuracy of each network in `states`, all of them in one packed forward pass per batch."""
    with torch.random.fork_rng(devices=[]):  # its init is overwritten; the global generator stays as it was
        model = Network.of(cfg).architecture.build(len(states))
    model.load_state_dict(pack_state(states))
    model.eval().to(memory_format=torch.channels_last)  # oneDNN's NHWC kernels: 1.6-1.9× ResNet-20 on 2 CPU cores
    correct = torch.zeros(len(states))
    for x, y in batches:
        logits = network_logits(call(model, side_by_side(x, len(states)))).view(size(x), len(states), -1)
        correct += (logits.argmax(-1) == y[:, None]).sum(0)
    return (correct / len(batches.x)).tolist()


def write_report(rows: list[dict], out: Path, unpruned: float) -> Path:
    """A table (layer × fraction) and a figure, one curve per layer, of test accuracy against the fraction removed."""
    from matplotlib.figure import Figure

    out.mkdir(parents=True, exist_ok=True)
    level, method = rows[0]["level"], rows[0]["method"]
    by_layer: dict[str, dict[float, float]] = {}
    for r in rows:
        by_layer.setdefault(r["layer"], {})[r["fraction"]] = r["test_acc"]
    fractions = sorted({f for curve in by_layer.values() for f in curve})
    lines = [f"# Sensitivity of each layer pruned alone (level {level}, {method}, no retraining)", "",
             f"Test accuracy of the ticket's trained network at level {level}, {unpruned:.4f} before this, with each layer alone "
             f"losing the given fraction of its {'kept weights (smallest magnitude)' if method == 'magnitude' else 'output channels (lowest L1 norm)'} "
             "(Li et al. 2017, §3.2).", "",
             "| layer | " + " | ".join(f"{f:.0%}" for f in fractions) + " |", "|---" * (len(fractions) + 1) + "|"]
    for layer, curve in by_layer.items():
        lines.append(f"| `{layer}` | " + " | ".join(f"{curve[f]:.4f}" if f in curve else "" for f in fractions) + " |")
    lines += ["", "![sensitivity](sensitivity.png)", ""]
    atomic_write(out / "report.md", "\n".join(lines).encode())
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for layer, curve in by_layer.items():
        points = sorted(curve.items())
        ax.plot([f * 100 for f, _ in points], [a for _, a in points], marker="o", markersize=3, label=layer)
    ax.axhline(unpruned, color="black", linestyle="--", linewidth=1, label="unpruned")
    ax.set_xlabel(f"percent of the layer's {'weights' if method == 'magnitude' else 'channels'} removed")
    ax.set_ylabel("test accuracy")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small", ncol=max(1, math.ceil(len(by_layer) / 12)))
    fig.tight_layout()
    save_figure(fig, out / "sensitivity.png")
    return out / "report.md"

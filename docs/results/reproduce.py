"""Record or recheck the committed evidence of `docs/results`, by hand (not in CI: each takes 20 s to 15 min).

    python docs/results/reproduce.py NAME --record   # run it into runs/evidence/NAME, copy its ledgers and report here
    python docs/results/reproduce.py NAME            # run it again and compare with the committed ledgers

Each piece of evidence is one command (`EVIDENCE`). What is committed under `docs/results/NAME/runs/` is every
run directory's `config.yaml`, its ledger (`results.jsonl`, or `stability.jsonl`) and, for runs recorded since lth
writes them, its `invocations.jsonl` (what ran it) and `dataset.json` (the data's sizes), named relative to `out_dir` (`NAME/RUN_ID`, or
`NAME/POINT/RUN_ID` for a sweep), so that `lth report docs/results/NAME/runs/*/*` rebuilds the report from them.

What a recheck can promise (README, Reproducibility): on the machine and build that recorded it (same CPU
kernels, same torch), the same lines bit for bit; elsewhere float rounding differs and training amplifies it,
so the claims are statistical: every (arm, level) mean over seeds of the rerun must lie within the committed
95% interval of that mean (Student's t over the committed seeds), and what no rounding changes (the
levels, arms, weights remaining) must be equal. It prints one line per cell and exits 1 if any is outside.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from lth.report import Stat

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MNIST = ["--data.root=../shared/data"]
LENET = ["experiments/lenet300_mnist.yaml", *MNIST, "--train.duration=2500it", "--train.checkpoint_every=2500it"]
# CIFAR-10 (JPEG copy): the CIFAR configs on real images, with overrides only (README, "Real images").
CIFAR_JPEG = ["--data.name=imagefolder", "--data.root=../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz"]
# The "pretrained" network of pretrained_mnist1d: the quickstart's dense network trained once at a seed of its own,
# saved as safetensors (`pretrain`). A path relative to the repository, so that config.yaml names no machine's path.
PRETRAINED = "runs/evidence/pretrained_mnist1d_weights/pretrained.safetensors"
# name: (lth command and arguments, the ledger it writes). The README of docs/results shows each.
EVIDENCE = {
    "quickstart": (["run", "experiments/quickstart.yaml"], "results.jsonl"),
    "nm24_mnist1d": (["run", "experiments/nm24_mnist1d.yaml", "--pack=1"], "results.jsonl"),
    "gradual_mnist1d": (["run", "experiments/gradual_mnist1d.yaml", "--pack=1"], "results.jsonl"),
    "channel_mnist1d": (["run", "experiments/channel_mnist1d.yaml", "--pack=1"], "results.jsonl"),
    "at_init_snip_mnist1d": (["run", "experiments/at_init_mnist1d.yaml", "--name=at_init_snip_mnist1d"], "results.jsonl"),
    "at_init_grasp_mnist1d": (["run", "experiments/at_init_mnist1d.yaml", "--prune.method=grasp", "--name=at_init_grasp_mnist1d"], "results.jsonl"),
    # Does the ticket beat sparse training from scratch at its sparsity: RigL and SET on its per-layer counts, and on ERK's.
    "dynamic_sparse_mnist1d": (["run", "experiments/quickstart.yaml", "--arms=[ticket,random_prune,scratch_e,rigl,set]", "--name=dynamic_sparse_mnist1d"],
                               "results.jsonl"),
    "dynamic_sparse_lenet300": (["run", *LENET, "--seed=[0,1,2]", "--arms=[ticket,rigl,set]", "--prune.levels=7", "--name=dynamic_sparse_lenet300"],
                                "results.jsonl"),
    "dynamic_sparse_erk_lenet300": (["run", *LENET, "--seed=[0,1,2]", "--arms=[ticket,rigl,set]", "--prune.levels=7", "--rigl.distribution=erk",
                                     "--set.distribution=erk", "--name=dynamic_sparse_erk_lenet300"], "results.jsonl"),
    "dynamic_sparse_erk_mnist1d": (["run", "experiments/quickstart.yaml", "--arms=[ticket,rigl,set]", "--rigl.distribution=erk", "--set.distribution=erk",
                                    "--name=dynamic_sparse_erk_mnist1d"], "results.jsonl"),
    # Early-bird tickets: the dense run ended where Network Slimming's masks settle, against the same study trained to the end.
    "earlybird_mnist1d": (["run", "experiments/earlybird_mnist1d.yaml"], "results.jsonl"),
    "earlybird_full_mnist1d": (["run", "experiments/earlybird_mnist1d.yaml", "--prune.schedule=oneshot", "--name=earlybird_full_mnist1d"], "results.jsonl"),
    # Frankle et al. (2021)'s question: magnitude, SNIP, GraSP and SynFlow at init under reinit, layerwise shuffle and random pruning.
    "at_init_shuffle_mnist1d": (["sweep", "sweeps/at_init_mnist1d.yaml", "--run"], "results.jsonl"),
    "at_init_synflow_mnist1d": (["run", "experiments/at_init_mnist1d.yaml", "--prune.method=synflow", "--name=at_init_synflow_mnist1d"], "results.jsonl"),
    "lenet300_mnist": (["run", *LENET, "--seed=[0,1,2]", "--arms=[ticket,reinit,random_prune]"], "results.jsonl"),
    # About an hour here: 93 trainings of 200 steps (Frankle & Carbin train 20,000), one evaluation each at the end.
    "conv2_cifar10_jpeg": (["run", "experiments/conv2_cifar10.yaml", *CIFAR_JPEG, "--seed=[0,1,2]", "--prune.levels=10", "--data.val_size=1000",
                            "--train.duration=200it", "--train.eval_every=200it", "--train.checkpoint_every=200it", "--name=conv2_cifar10_jpeg"],
                           "results.jsonl"),
    "own_cnn_mnist1d": (["run", "experiments/own_cnn_mnist1d.yaml"], "results.jsonl"),
    # Pretrained tickets in miniature (Chen et al. 2020): IMP starting from and rewinding to a trained network (`pretrain`).
    "pretrained_mnist1d": (["run", "experiments/quickstart.yaml", f"--model.weights={PRETRAINED}", "--arms=[ticket,reinit,random_prune]",
                            "--name=pretrained_mnist1d"], "results.jsonl"),
    "vit_cifar10_jpeg": (["run", "experiments/vit_cifar10.yaml", *CIFAR_JPEG, "--name=vit_cifar10_jpeg"], "results.jsonl"),
    # Which rewind point finds tickets: a sweep of the quickstart, every point run here (`lth sweep --run`), compared in one report.
    "quickstart_rewind": (["sweep", "sweeps/quickstart_rewind.yaml", "--run"], "results.jsonl"),
    # A small BERT on real text (movie-review polarity), a dataset of the user's own kind with padded token batches (`fetch_vader`).
    "bert_movie_reviews": (["run", "experiments/bert_movie_reviews.yaml"], "results.jsonl"),
    # Liu et al. (2019)'s question of five methods (a sweep) and of Network Slimming, which ranks globally (its own run).
    "rethinking_mnist1d": (["sweep", "sweeps/rethinking_mnist1d.yaml", "--run"], "results.jsonl"),
    "rethinking_slimming_mnist1d": (["run", "experiments/rethinking_mnist1d.yaml", "--prune.method=slimming", "--prune.strategy=global",
                                     "--point=prune.method=slimming", "--name=rethinking_slimming_mnist1d"], "results.jsonl"),
    # The same question of ResNet-20 on the CIFAR-10 JPEG copy at a CPU-sized schedule (300 steps of batch 64 a training, Liu et al.
    # train 160 epochs), for the two methods whose unit or recipe the MNIST-1D CNN cannot show: residual blocks (SSS), and
    # fine-tuning from reconstructed weights on a ResNet (ThiNet), and L1 channels (Li et al.) beside them.
    **{f"rethinking_cifar10_jpeg_{m}": (["run", "experiments/resnet20_cifar10_l1.yaml", *CIFAR_JPEG, "--seed=[0,1,2]", "--data.val_size=1000",
                                         "--train.duration=300it", "--train.milestones=[150it,225it]", "--train.eval_every=150it",
                                         "--train.checkpoint_every=150it", f"--prune.method={m}", f"--point=prune.method={m}",
                                         "--name=rethinking_cifar10_jpeg"], "results.jsonl") for m in ("sss", "thinet", "channel", "regression")},
    "resnet20_cifar10_jpeg": (["run", "experiments/resnet20_cifar10.yaml", *CIFAR_JPEG, "--seed=0", "--arms=[ticket,reinit]", "--prune.levels=2",
                               "--data.val_size=1000", "--train.duration=300it", "--train.milestones=[200it]", "--train.eval_every=150it",
                               "--train.checkpoint_every=150it", "--prune.rewind=50it", "--name=resnet20_cifar10_jpeg"], "results.jsonl"),
    # What in a ticket matters, and where its weights go (the report's gap, per-layer and overlap sections).
    "questions_quickstart": (["run", "experiments/quickstart.yaml", "--arms=[ticket,signs,shuffle,finetune]", "--name=questions_quickstart"],
                             "results.jsonl"),
    "questions_lenet300": (["run", *LENET, "--seed=[0,1,2]", "--arms=[ticket,signs,shuffle,finetune]", "--name=questions_lenet300"], "results.jsonl"),
    "stability_lenet300": (["stability", *LENET, "--seed=0", "--prune.levels=7", "--rewind=[0,100it,500it]", "--levels=[0,7]", "--alphas=11",
                            "--between_levels=true", "--name=stability_lenet300"], "stability.jsonl"),
    "stability_mnist1d_cnn": (["stability", "experiments/quickstart.yaml", "--model=mnist1d_cnn", "--name=stability_mnist1d_cnn", "--seed=[0,1,2]",
                               "--prune.levels=3", "--rewind=[0,25it,100it,250it]", "--levels=[0,3]", "--alphas=11", "--pack=1"], "stability.jsonl"),
}
# The value compared per cell, by ledger: test accuracy at early stop, or the test barrier of a point.
VALUE = {"results.jsonl": "test_acc_at_early_stop", "stability.jsonl": "test_barrier"}
TIMING = ("wall_seconds", "inference_speedup")


# The evidence was recorded on two threads, before lth chose one for small networks (`lth.threads`); the
# thread count changes float rounding, so reruns use the recorded one.
THREADS = "--train.threads=2"


def pretrain() -> None:
    """The pretrained weights of pretrained_mnist1d: the quickstart's dense network at seed 100, trained as its level 0,
    exported as a plain network (`lth export`) and its weights written as safetensors, as `save_pretrained` writes them."""
    import torch
    from safetensors.torch import save_file

    out_dir = REPO / Path(PRETRAINED).parent
    command = ["run", "experiments/quickstart.yaml", "--seed=100", "--arms=[ticket]", "--prune.levels=0", "--name=pretrain", THREADS, f"--out_dir={out_dir}"]
    subprocess.run([sys.executable, "-m", "lth.cli", *command], cwd=REPO, check=True)
    (run_dir,) = (config.parent for config in out_dir.glob("pretrain/*/config.yaml"))
    subprocess.run([sys.executable, "-m", "lth.cli", "export", str(run_dir), "--level=0", f"--out={out_dir / 'dense.pt'}"], cwd=REPO, check=True)
    state = torch.load(out_dir / "dense.pt", weights_only=False)["state_dict"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(REPO / PRETRAINED))


def fetch_vader() -> None:
    """The movie-review sentences of bert_movie_reviews: vaderSentiment 3.3.2's source distribution from PyPI
    (`experiments/movie_reviews.py`), into the data root its config names."""
    if not (REPO / "data/vader/vaderSentiment-3.3.2.tar.gz").is_file():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "vaderSentiment==3.3.2", "-d", "data/vader"],
                       cwd=REPO, check=True)


def run(name: str, out_dir: Path) -> list[Path]:
    """The evidence's command, into `out_dir`; its run directories."""
    if name == "pretrained_mnist1d":
        pretrain()
    if name == "bert_movie_reviews":
        fetch_vader()
    command, ledger = EVIDENCE[name]
    subprocess.run([sys.executable, "-m", "lth.cli", *command, THREADS, f"--out_dir={out_dir}"], cwd=REPO, check=True)
    return sorted(p.parent for p in out_dir.glob(f"**/{ledger}"))  # NAME/RUN_ID, or NAME/POINT/RUN_ID for a sweep


def lines(run_dirs: list[Path], ledger: str) -> list[dict]:
    """Every line, with the folder its run directory sits in (the experiment's name, or a sweep's point)."""
    return [json.loads(line) | {"folder": d.parent.name} for d in run_dirs for line in (d / ledger).read_text().splitlines() if line.strip()]


def cells(rows: list[dict], ledger: str) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = {}
    for r in rows:
        kind = (r["arm"], r["level"], round(r["weights_remaining"], 6)) if ledger == "results.jsonl" else (r["kind"], r["level"], r["rewind_step"])
        out.setdefault((r["folder"], *kind), []).append(r[VALUE[ledger]])
    return out


def record(name: str) -> None:
    out_dir = REPO / "runs" / "evidence" / name
    run_dirs = run(name, out_dir)
    committed = HERE / name / "runs"
    shutil.rmtree(committed, ignore_errors=True)
    for d in run_dirs:
        target = committed / d.parent.name / d.name
        target.mkdir(parents=True)
        shutil.copy(d / EVIDENCE[name][1], target / EVIDENCE[name][1])
        # What ran it and on which data's sizes, for the report's Setup section and its figures' titles (`lth.provenance`).
        for kept in ("invocations.jsonl", "dataset.json"):
            if (d / kept).exists():
                shutil.copy(d / kept, target / kept)
        # Its out_dir relative to the repository, as every path a results page names (no machine's paths).
        (target / "config.yaml").write_text((d / "config.yaml").read_text().replace(f"out_dir: {REPO}/", "out_dir: "))
    report = ["report", *map(str, run_dirs), "--out", str(HERE / name)] if EVIDENCE[name][1] == "results.jsonl" else None
    if report:
        subprocess.run([sys.executable, "-m", "lth.cli", *report], cwd=REPO, check=True)
    else:  # `lth stability` wrote its report over the seeds beside the run directories
        for file in run_dirs[0].parent.glob("stability_report/*"):
            shutil.copy(file, HERE / name / file.name)
    print(f"recorded {len(run_dirs)} run directories of {name} in {committed.relative_to(REPO)}")


def check(name: str) -> int:
    ledger = EVIDENCE[name][1]
    committed = lines(sorted(p.parent for p in (HERE / name / "runs").glob(f"**/{ledger}")), ledger)
    with tempfile.TemporaryDirectory() as tmp:
        rerun = lines(run(name, Path(tmp)), ledger)
    strip = lambda rows: sorted(json.dumps({k: v for k, v in r.items() if k not in TIMING}, sort_keys=True) for r in rows)  # noqa: E731
    if strip(rerun) == strip(committed):
        print(f"{name}: every line equal to the committed ones, bit for bit (timings aside)")
        return 0
    before, after = cells(committed, ledger), cells(rerun, ledger)
    failures = 0
    if set(before) != set(after):
        print(f"{name}: the cells differ: {sorted(set(before) ^ set(after))[:5]}")
        return 1
    for key, values in sorted(before.items()):
        mean, now = statistics.fmean(values), statistics.fmean(after[key])
        n, half = len(values), Stat.of(values).half_width
        inside = abs(now - mean) <= half
        failures += not inside
        print(f"{'ok ' if inside else 'OUT'} {key}: rerun {now:.4f}, committed {mean:.4f} ± {half:.4f} (95%, n={n})")
    print(f"{name}: {failures} of {len(before)} cells outside the committed intervals")
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(EVIDENCE))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if args.record:
        record(args.name)
    else:
        sys.exit(check(args.name))

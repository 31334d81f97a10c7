"""Every CUDA path of lth, smoke-tested on a GPU in about two minutes (issue 38, priority 1).

    python benchmarks/cuda_smoke.py --images cifar10-jpeg.tar.gz --json FILE

Each check runs the `lth` command as a user would, in processes of its own, several at once (the GPU and the
cores have room; torch.compile's cache is shared). The quickstart's network at a few levels is the reference:

  sigkill-captured   killed mid-level under the captured step, then rerun: its results lines equal the reference's
  eager              every step eager (no CUDA graph): equal to the captured reference, or how far apart
  bf16-mixed         trains and records finite, better-than-chance accuracies
  nondeterministic   train.deterministic off (cuDNN autotuning, no deterministic kernels) trains
  divergence         lr 1e6: the arm stops at its divergence, the later level is not trained, exit 4
  imagefolder-stream CIFAR-10 JPEGs decoded in DataLoader workers into pinned memory (data.cache_bytes=0)
  transformers-vit   experiments/vit_cifar10.yaml's ViT from a Hugging Face config, on the same images, a level pruned
                     under the compiled, captured step
  plugins-2:4-export a user's own network by import path and plugin arm, pruned 2:4, exported through
                     torch.sparse.to_sparse_semi_structured, its products against the dense masked weights
  plugins-pretrained a user's method and schedule, starting from pretrained weights

A check passes or fails on what it promises; timings are reported, never judged. Exit 1 if any check failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_own_code import PLUGINS  # noqa: E402 - the test suite's own plugins: one source for both

from lth.cli import DIVERGED  # noqa: E402
from lth.export import sparse_copies  # noqa: E402
from lth.run_dir import TIMING_FIELDS  # noqa: E402

QUICKSTART = str(ROOT / "experiments/quickstart.yaml")
# The quickstart's network on MNIST-1D, 140 steps a level, a checkpoint every 50: a kill at step 60 of level 1
# resumes mid-level.
SMALL = ["--seed=0", "--arms=[ticket,reinit]", "--prune.levels=2", "--train.duration=4ep", "--train.checkpoint_every=50it"]
# A network of a user's own whose middle layer the 2:4 kernels accept (multiples of 32×64 in fp16).
MODELS = '''
from torch import nn


class Wide(nn.Module):
    def __init__(self, input_shape, num_classes, width=256):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                    nn.Linear(width, num_classes))

    def forward(self, x):
        return self.layers(x)
'''


def lth(work: Path, name: str, args: list[str], kill: str | None = None, eager: bool = False) -> subprocess.CompletedProcess:
    """`lth` in `work` (where the plugins are), writing under work/name; its output saved as work/name.log."""
    if kill:
        command = [sys.executable, str(ROOT / "tests/kill_at.py"), kill]
    elif eager:  # the step the warm-up runs, for the whole fit: the CUDA graph is never captured
        command = [sys.executable, "-c", "import sys, lth.module as m; m.EAGER_STEPS_BEFORE_CAPTURE = 10**9; from lth.cli import main; sys.exit(main())"]
    else:
        command = [sys.executable, "-m", "lth.cli"]
    done = subprocess.run([*command, *args, f"--out_dir={work / name}", "--name=smoke"], cwd=work, capture_output=True, text=True, timeout=600)
    (work / f"{name}.log").write_text(f"$ {' '.join(command[-1:] + args)}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def rows(work: Path, name: str) -> list[dict]:
    """A run's results lines as written, less timings (read as JSON: a plugin's arm is no arm of this process)."""
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_FIELDS} for path in sorted((work / name).rglob("results.jsonl"))
            for line in path.read_text().splitlines()]


def trained(done: subprocess.CompletedProcess, found: list[dict], levels: int) -> str | None:
    """Why a run that should have trained every level did not, or None."""
    if done.returncode != 0:
        return f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"
    if sorted({row["level"] for row in found}) != list(range(levels + 1)):
        return f"levels recorded: {sorted({row['level'] for row in found})}"
    bad = [row for row in found if not 0.15 < row["test_acc"] <= 1]  # MNIST-1D and CIFAR-10 have 10 classes
    return f"accuracies at chance or not finite: {[(r['level'], r['arm'], r['test_acc']) for r in bad]}" if bad else None


def differences(a: list[dict], b: list[dict]) -> str:
    """The accuracies of two runs' results lines, side by side, where they differ."""
    return "; ".join(f"level {x['level']} {x['arm']}: test_acc {x['test_acc']} vs {y['test_acc']}" for x, y in zip(a, b) if x != y)


def reference(work: Path) -> dict:
    done = lth(work, "reference", ["run", QUICKSTART, *SMALL])
    found = rows(work, "reference")
    return {"why_not": trained(done, found, 2), "rows": found}


def sigkill(work: Path, expected: concurrent.futures.Future) -> str | None:
    killed = lth(work, "sigkill", ["run", QUICKSTART, *SMALL], kill="1:60")
    if killed.returncode != -9:
        return f"the kill at level 1 step 60 did not happen (exit {killed.returncode})"
    done = lth(work, "sigkill", ["run", QUICKSTART, *SMALL])
    found, want = rows(work, "sigkill"), expected.result()["rows"]
    return trained(done, found, 2) or (None if found == want else f"the rerun differs from the uninterrupted run: {differences(found, want)}")


def eager(work: Path, expected: concurrent.futures.Future) -> str | None:
    done = lth(work, "eager", ["run", QUICKSTART, *SMALL], eager=True)
    found, want = rows(work, "eager"), expected.result()["rows"]
    if why := trained(done, found, 2):
        return why
    return None if found == want else f"trains, but not bit-identically to the captured step ({differences(found, want)})"


def variant(work: Path, name: str, *extra: str) -> str | None:
    done = lth(work, name, ["run", QUICKSTART, *SMALL, "--prune.levels=1", *extra])
    return trained(done, rows(work, name), 1)


def divergence(work: Path) -> str | None:
    done = lth(work, "divergence", ["run", QUICKSTART, *SMALL, "--arms=[ticket]", "--train.lr=1e6"])
    if done.returncode != DIVERGED or "diverged" not in done.stderr:
        return f"exit {done.returncode}, expected {DIVERGED} with the divergence named"
    found = rows(work, "divergence")
    return None if not any(row["level"] > 0 for row in found) else "a level after the divergence was trained"


# A few steps of a CIFAR-10 experiment on the images folder: every evaluation and checkpoint at the end.
IMAGES = ["--data.name=imagefolder", "--data.image_size=32", "--data.val_size=100", "--seed=0", "--arms=[ticket]", "--train.duration=100it",
          "--train.eval_every=100it", "--train.checkpoint_every=100it"]


def stream(work: Path, images: Path) -> str | None:
    args = ["run", str(ROOT / "experiments/resnet20_cifar10.yaml"), *IMAGES, f"--data.root={images}", "--data.cache_bytes=0", "--data.workers=8",
            f"--data.cache={work / 'cache'}", "--prune.levels=0", "--train.milestones=[]", "--prune.rewind=0"]
    done = lth(work, "stream", args)
    return trained(done, rows(work, "stream"), 0)


def vit(work: Path, images: Path) -> str | None:
    args = ["run", str(ROOT / "experiments/vit_cifar10.yaml"), *IMAGES, f"--data.root={images}", f"--data.cache={work / 'vit-cache'}",
            "--prune.levels=1", "--train.warmup=10it", "--prune.rewind=10it"]
    done = lth(work, "vit", args)
    return trained(done, rows(work, "vit"), 1)


def own_code(work: Path) -> dict:
    """A user's network by import path and their arm, pruned 2:4 and exported; then their method and schedule from
    pretrained weights (the first run's dense network)."""
    (work / "smoke_models.py").write_text(MODELS)
    (work / "smoke_plugins.py").write_text(PLUGINS)
    own = ["run", QUICKSTART, *SMALL, "--model.name=smoke_models:Wide", "--plugins=[smoke_plugins]", "--arms=[ticket,fresh_init]", "--pack=1"]
    done = lth(work, "nm24", [*own, "--prune.method=nm", "--prune.nm={n: 2, m: 4}", "--prune.schedule=oneshot", "--prune.oneshot={target: 0.5}",
                              "--prune.levels=1"])
    out: dict = {"plugins-2:4-export": trained(done, rows(work, "nm24"), 1)}
    if out["plugins-2:4-export"] is not None:
        out["plugins-pretrained"] = "no dense network to start from (the 2:4 run failed)"
        return out
    run_dir = next((work / "nm24").rglob("results.jsonl")).parent
    out["plugins-2:4-export"] = semi_structured(work, run_dir)
    # The dense network as a plain state dict, the way a user would make one: `lth export` of level 0.
    if why := export(work, run_dir, 0, work / "dense.pt"):
        out["plugins-pretrained"] = why
        return out
    done = lth(work, "pretrained", [*own, f"--model.weights={work / 'dense.pt'}", "--prune.method=smallest", "--prune.schedule=halving"])
    out["plugins-pretrained"] = trained(done, rows(work, "pretrained"), 2)
    return out


def export(work: Path, run_dir: Path, level: int, out: Path, *extra: str) -> str | None:
    """`lth export` of the ticket's `level`, its output saved as work/OUT.log; why it failed, or None."""
    done = subprocess.run([sys.executable, "-m", "lth.cli", "export", str(run_dir), "--level", str(level), "--out", str(out), *extra],
                          cwd=work, capture_output=True, text=True, timeout=300)
    (work / f"{out.stem}.log").write_text(f"exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return None if done.returncode == 0 else f"lth export: exit {done.returncode}: {done.stderr.strip()[-300:]}"


def semi_structured(work: Path, run_dir: Path) -> str | None:
    if why := export(work, run_dir, 1, work / "ticket.pt", "--sparse"):
        return why
    if not torch.cuda.is_available():
        return None  # exported, its CSR copies checked; the 2:4 kernels need a GPU
    payload = torch.load(work / "ticket.pt", weights_only=False)
    compressed = {name: t for name, t in sparse_copies(payload).items() if isinstance(t, torch.sparse.SparseSemiStructuredTensor)}
    if not compressed:
        return "no layer was exported as a 2:4 semi-structured tensor"
    for name, weight in compressed.items():
        dense = payload["state_dict"][name].cuda().half()
        x = torch.randn(256, dense.shape[1], device="cuda", dtype=torch.half, generator=torch.Generator("cuda").manual_seed(0))
        want, got = F.linear(x, dense), F.linear(x, weight)
        error = float((got - want).abs().max() / want.abs().max())
        if error > 1e-2:  # fp16 accumulations in another order: ~1e-3 of the scale
            return f"{name}: the semi-structured product differs from the dense one by {error:.1e} of its scale"
    return None


def outcome(job: concurrent.futures.Future, read=lambda r: r, default=None):
    """A check's answer; a check that raised failed, with the exception as its reason (every other check still reports)."""
    try:
        return read(job.result())
    except Exception as err:  # noqa: BLE001 - any failure of a check is its result
        why = f"raised {type(err).__name__}: {err}"
        return why if default is None else dict.fromkeys(default, why)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="an image-folder archive (cifar10-jpeg.tar.gz, or a small part of it)")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--work", type=Path, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: the same checks on the CPU (the 2:4 kernels not exercised)", file=sys.stderr)
    work = args.work or Path(tempfile.mkdtemp(prefix="lth-cuda-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    started, results = time.perf_counter(), {}
    images = work / "images"
    with tarfile.open(args.images) as archive:  # a streamed dataset is a folder: an archive is read whole, into the cache
        archive.extractall(images, filter="data")
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:  # eight processes compiling at once on a 16-core machine
        ref = pool.submit(reference, work)
        own = pool.submit(own_code, work)  # the longest chain: three runs one after another
        jobs = {
            "sigkill-captured": pool.submit(sigkill, work, ref),
            "eager": pool.submit(eager, work, ref),
            "bf16-mixed": pool.submit(variant, work, "bf16", "--train.precision=bf16-mixed"),
            "nondeterministic": pool.submit(variant, work, "nondeterministic", "--train.deterministic=false"),
            "divergence": pool.submit(divergence, work),
            "imagefolder-stream": pool.submit(stream, work, images),
            "transformers-vit": pool.submit(vit, work, images),
        }
        results["reference"] = outcome(ref, lambda r: r["why_not"])
        for name, job in jobs.items():
            results[name] = outcome(job)
        results.update(outcome(own, default={"plugins-2:4-export": None, "plugins-pretrained": None}))
    for name, why in results.items():
        print(f"{name}: {'ok' if why is None else 'FAILED: ' + why}")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    summary = {"device": device, "torch": torch.__version__, "seconds": round(time.perf_counter() - started, 1),
               "checks": {name: {"ok": why is None, "why": why} for name, why in results.items()}, "logs": str(work)}
    args.json.write_text(json.dumps(summary, indent=2))
    return 1 if any(why is not None for why in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

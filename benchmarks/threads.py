"""Where a second thread pays: one training step (forward, backward, SGD update) of lth's networks at the
batch and pack of their studies, timed with 1 thread and with all of this process's CPUs, on a quiet machine
and beside one competing busy process that this script starts and stops itself.

    python benchmarks/threads.py [--json FILE]

It prints, per network, the multiply-accumulates of one step (per example × batch × pack), the mean step time
(what a run pays; a median would hide the steps a busy scheduler delays) for each thread count, quiet and
busy, and the speed-up of the extra threads; `lth.threads.ONE_THREAD_BELOW` lies where it measured the
crossover (README, Performance). Run it with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from lth.flops import macs
from lth.models import MODELS
from lth.threads import cpus

# (name, model, input shape, classes, batch, pack): the studies' networks as they train on a CPU.
NETWORKS = [
    ("quickstart MLP, one run", "mnist1d_mlp", (1, 40), 10, 100, 1),
    ("quickstart MLP, a pack of 16", "mnist1d_mlp", (1, 40), 10, 100, 16),
    ("MNIST-1D CNN, one run", "mnist1d_cnn", (1, 40), 10, 100, 1),
    ("LeNet-300-100, batch 60", "lenet_300_100", (1, 28, 28), 10, 60, 1),
    ("LeNet-300-100, batch 600", "lenet_300_100", (1, 28, 28), 10, 600, 1),
    ("Conv-2, batch 4", "conv2", (3, 32, 32), 10, 4, 1),
    ("ResNet-20, batch 16", "resnet20", (3, 32, 32), 10, 16, 1),
    ("Conv-2, batch 60", "conv2", (3, 32, 32), 10, 60, 1),
    ("ResNet-20, batch 128", "resnet20", (3, 32, 32), 10, 128, 1),
]


def spin(seconds: float) -> None:
    """The competing process: one core busy, bounded in time."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def step_seconds(name: str, shape, classes: int, batch: int, pack: int, threads: int, repeats: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = MODELS[name](shape, classes, pack=pack)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, shape[0] * pack, *shape[1:])
    y = torch.randint(0, classes, (batch * pack,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x).view(batch * pack, classes), y).backward()
        optimizer.step()

    for _ in range(3):
        step()
    times = []
    budget = time.perf_counter() + 20  # at most ~20 s per measurement, however slow the step
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if time.perf_counter() > budget:
            break
    return statistics.fmean(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    many = cpus()
    rows = []
    print(f"torch {torch.__version__}, {many} CPUs for this process", flush=True)
    print("| network | MACs per step | 1 thread, quiet | " + f"{many} threads, quiet | 1 thread, busy | {many} threads, busy | "
          f"{many} threads' speed-up, quiet |", "|---|---|---|---|---|---|---|", sep="\n", flush=True)
    for label, name, shape, classes, batch, pack in NETWORKS:
        with torch.device("meta"):
            work = macs(MODELS[name](shape, classes), shape) * batch * pack
        times = {}
        for busy in (False, True):
            competitor = multiprocessing.get_context("spawn").Process(target=spin, args=(600,)) if busy else None
            if competitor:
                competitor.start()
                time.sleep(0.5)
            try:
                for threads in (1, many):
                    times[busy, threads] = step_seconds(name, shape, classes, batch, pack, threads, args.repeats)
            finally:
                if competitor:
                    competitor.terminate()
                    competitor.join()
        row = {"network": label, "model": name, "batch": batch, "pack": pack, "macs_per_step": work,
               **{f"ms_{'busy' if b else 'quiet'}_{t}": 1000 * s for (b, t), s in times.items()}, "speedup_quiet": times[False, 1] / times[False, many]}
        rows.append(row)
        print(f"| {label} | {work / 1e6:,.1f} M | {row['ms_quiet_1']:.2f} ms | {row[f'ms_quiet_{many}']:.2f} ms | {row['ms_busy_1']:.2f} ms | "
              f"{row[f'ms_busy_{many}']:.2f} ms | {row['speedup_quiet']:.2f}× |", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"torch": torch.__version__, "cpus": many, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

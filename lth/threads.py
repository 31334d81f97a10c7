"""How many threads torch's operations use: one policy, applied before any training (`lth.imp.run_experiments`).

torch takes every core of the machine by default, whatever this process may use (its CPU affinity, SLURM's
`--cpus-per-task`), and its threads wait on each other at every operation: for a network whose operations are
shorter than a scheduler slice, another process on the same cores makes every step several times slower (on
2 cores, three levels of the quickstart took 3.4× their quiet time on 2 threads beside one busy process, and
1.2× on 1). So a step
below `ONE_THREAD_BELOW` multiply-accumulates runs on one thread, and a larger one on every CPU this process
may use, shared with its DataLoader workers and the other ranks of its node. An explicit `train.threads` or
`OMP_NUM_THREADS` wins. Like packing, the thread count changes only float rounding (a matmul split over two
threads may sum in another order), so it is not part of the run's identity: a run resumes on a node with other
CPUs; for bit-for-bit reruns, `config.yaml` records it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

# Measured on 2 cores (README, Performance; benchmarks/threads.py, docs/results/throughput/cpu-threads.json).
# Below: the quickstart's packed MLP (24 M MACs per step) and LeNet-300-100 (16 M) run their whole commands 6-8%
# slower on 1 thread than on 2 when the machine is quiet, and 2.7× faster beside one busy process (the
# quickstart: 19.8 s against 52.7 s). Above: Conv-2 and ResNet-20 at their batches (2.6 and 5.2 G MACs) step
# 1.75× faster on 2 threads. No network measured lies between 24 M and 160 M MACs per step.
ONE_THREAD_BELOW = 100_000_000


@dataclass(frozen=True)
class Threads:
    count: int
    why: str


def cpus() -> int:
    """The CPUs this process may use: its affinity, and no more than SLURM gave the task."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return max(1, min(available, int(slurm)) if slurm.isdigit() else available)


def choose(step_macs: int, available: int, setting: int | None = None, environment: str | None = None, ranks: int = 1, workers: int = 0) -> Threads:
    """The thread count for training steps of `step_macs` MACs, on `available` CPUs shared by `ranks` processes
    and their `workers` DataLoader workers each; `setting` (train.threads) and `environment` (OMP_NUM_THREADS) win."""
    if setting:
        return Threads(setting, "train.threads")
    if environment and environment.isdigit() and int(environment) > 0:
        return Threads(int(environment), "OMP_NUM_THREADS")
    share = max(1, available // max(ranks, 1) - workers)
    if step_macs < ONE_THREAD_BELOW:
        return Threads(1, f"a training step of {step_macs / 1e6:,.3g} M MACs is too short to share between threads")
    return Threads(share, f"{available} CPUs for this process" + (f", shared by {ranks} ranks" if ranks > 1 else "")
                   + (f" and {workers} workers each" if workers else ""))


def apply(threads: Threads) -> None:
    torch.set_num_threads(threads.count)
    with contextlib.suppress(RuntimeError):  # settable once per process, before any inter-op parallel work
        torch.set_num_interop_threads(threads.count)

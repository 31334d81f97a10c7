"""One run across processes: `train.devices` per node × `train.num_nodes` ranks, data-parallel (Lightning's DDP).

Every rank runs the same program, the whole driver included, so that each reaches the same `trainer.fit` calls in
the same order; what could make them disagree is taken once and shared:
- **one writer**: rank 0 alone writes files (`lth.files.atomic_open` writes nothing elsewhere), claims locks,
  logs to W&B and prints; the others read what it wrote (Lightning's checkpoint saves end in a barrier, and
  `lth.training.train_pack` waits for rank 0 before each fit, so a start checkpoint it just wrote is there);
- **decisions on rank 0**: which arms this invocation trains (the locks it could claim) are broadcast;
- **masks**: rank 0's are broadcast at every level and their hash compared across ranks, so that a rank that
  computed other masks stops the run with one line rather than training another network (NNI's issue #5205).

Processes start before any work, here: under `srun` (SLURM) or `torchrun` the scheduler has started every rank;
otherwise rank 0 starts the others on its node as Lightning's own launcher does (the same command line, with
LOCAL_RANK set). Gradients are averaged by `lth.module.MaskedModule` itself, in one all-reduce per step: it steps
the optimizer inside `training_step` (so that a GPU can capture the whole step as one graph), before the
`DistributedDataParallel` wrapper would arm its gradient hooks, so `Strategy` below keeps Lightning's DDP (its
process group, cluster environments, barriers and rank-0 checkpointing) without the wrapper.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
from lightning.fabric.plugins.environments import LightningEnvironment, SLURMEnvironment, TorchElasticEnvironment
from lightning.fabric.utilities.distributed import _init_dist_connection
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from lth import masks as M

TIMEOUT = timedelta(minutes=30)  # a rank waiting at a collective for another that died, before it gives up


class MismatchError(RuntimeError):
    """Ranks that disagree (masks, work): one line, exit 2."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1


WORLD = World()


def start(devices: int, num_nodes: int) -> World:
    """Join (or, as rank 0 on a node without a launcher, start) the `devices` × `num_nodes` ranks of this run."""
    global WORLD
    size = devices * num_nodes
    if size == 1 or torch.distributed.is_initialized():
        return WORLD
    # A scheduler's ranks: srun's tasks (one per rank) or torchrun's. Otherwise (a plain process, or a SLURM batch
    # job of one task, as an array task of a sweep is) rank 0 starts the ranks of its node itself.
    slurm = SLURMEnvironment.detect() and os.environ.get("SLURM_NTASKS") == str(size)
    environment = SLURMEnvironment() if slurm else TorchElasticEnvironment() if TorchElasticEnvironment.detect() else LightningEnvironment()
    if not environment.creates_processes_externally:
        _SubprocessScriptLauncher(environment, devices, num_nodes).launch(lambda: None)
    rank = environment.global_rank() if not isinstance(environment, LightningEnvironment) else environment.node_rank() * devices + environment.local_rank()
    environment.set_world_size(size)
    environment.set_global_rank(rank)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(environment.local_rank())  # one GPU per rank, before the first collective
    _init_dist_connection(environment, backend, global_rank=rank, world_size=size, timeout=TIMEOUT)
    # Torn down before the interpreter's own exit: otherwise a rank whose peers have gone can abort on the way out
    # (std::terminate from the backend's threads) instead of leaving with its exit code.
    atexit.register(torch.distributed.destroy_process_group)
    WORLD = World(rank, size)
    return WORLD


def writer() -> bool:
    return WORLD.rank == 0


def barrier() -> None:
    if WORLD.size > 1:
        torch.distributed.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's `value`, on every rank."""
    if WORLD.size == 1:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def largest(value: int, device: torch.device | None = None) -> int:
    """The largest of every rank's `value`."""
    box = torch.tensor(value, device=device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.distributed.all_reduce(box, op=torch.distributed.ReduceOp.MAX)
    return int(box)


def same_masks(masks: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Rank 0's masks on every rank, checked by hash across ranks."""
    if WORLD.size == 1:
        return masks
    masks = broadcast(masks)
    digest = M.sha256(masks)  # the fingerprint every results line carries (`mask_sha256`)
    digests = [None] * WORLD.size
    torch.distributed.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        if not writer():
            raise SystemExit(2)  # rank 0 says why, once
        differ = next(r for r, d in enumerate(digests) if d != digests[0])
        raise MismatchError(f"{what}: rank {differ} holds other masks than rank 0 (sha256 {digests[differ][:12]} against {digests[0][:12]}); "
                            "the ranks would train different networks, so the run stops here")
    return masks


def average_gradients(parameters: list[torch.Tensor]) -> None:
    """Every rank's gradients replaced by their mean over ranks: one all-reduce of them flattened."""
    grads = [p.grad for p in parameters if p.grad is not None]
    flat = torch._utils._flatten_dense_tensors(grads)
    torch.distributed.all_reduce(flat)
    flat /= WORLD.size
    for grad, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        grad.copy_(synced)


class Strategy(DDPStrategy):
    """Lightning's DDP without the `DistributedDataParallel` wrapper (see the module's docstring)."""

    def configure_ddp(self) -> None:
        pass


"""Stopping on SIGUSR1: SLURM sends it before a time limit or preemption (`--signal=B:USR1@...`). The run
checkpoints its exact training position and exits 3; rerunning the same command resumes it."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning.pytorch.callbacks import Callback

# Set by SIGUSR1; checked after every training batch and between pieces of work.
STOP = threading.Event()


class Interrupted(RuntimeError):
    """SIGUSR1 asked the run to stop; the training state is checkpointed."""


@contextmanager
def stop_on_sigusr1() -> Iterator[None]:
    STOP.clear()
    previous = signal.signal(signal.SIGUSR1, lambda *_: STOP.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


def check(where: str) -> None:
    if STOP.is_set():
        raise Interrupted(f"stopped by SIGUSR1 {where}")


class StopOnSignal(Callback):
    """Checkpoints the exact training position and stops when SIGUSR1 has arrived."""

    def __init__(self, saved: list[Path]):
        self.saved = saved

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if STOP.is_set():
            trainer.save_checkpoint("last.ckpt")
            saved = ", ".join(map(str, self.saved))
            raise Interrupted(f"stopped by SIGUSR1 at step {trainer.global_step}; checkpointed to {saved}")

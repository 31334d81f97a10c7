"""Stopping on a signal: checkpoint the exact training position, say so in one line, exit non-zero; rerunning
the same command resumes. SIGUSR1 is SLURM's warning before a time limit or preemption
(`--signal=B:USR1@...`, the scripts requeue on its exit code 3). SIGTERM is what SLURM sends at the time limit
itself and on `scancel`, and what most process managers send: exit 143 (128 + 15, the shell's convention for
a death by SIGTERM), so that a wrapper or a job dependency never sees success with a level unfinished.
SIGINT (Ctrl-C) exits 130 likewise; a second Ctrl-C stops at once, without a checkpoint."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from lth import distributed

# Set by a stopping signal; checked after every training batch and between pieces of work.
STOP = threading.Event()
RECEIVED: list[int] = []  # the signal that set STOP
SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
REQUEUE = 3  # the exit code after SIGUSR1: checkpointed, not failed


class Interrupted(RuntimeError):
    """A signal asked the run to stop; the training state is checkpointed."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = REQUEUE if signum == signal.SIGUSR1 else 128 + signum


def _received(signum, frame) -> None:
    if signum == signal.SIGINT and STOP.is_set():
        raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the checkpoint
    RECEIVED[:] = [signum]
    STOP.set()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    STOP.clear()
    RECEIVED.clear()
    previous = {s: signal.signal(s, _received) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def interrupted(where: str) -> Interrupted:
    signum = RECEIVED[0]
    return Interrupted(f"stopped by {signal.Signals(signum).name} {where}", signum)


def stopping(device: torch.device | None = None) -> bool:
    """Whether a stopping signal has arrived: at any rank, under data parallelism, so that every rank stops at
    the same step (a signal reaches the ranks at different moments; a rank one step ahead would wait for the
    others' gradients for ever)."""
    signum = RECEIVED[0] if STOP.is_set() else 0
    if distributed.WORLD.size > 1:
        signum = distributed.largest(signum, device)
        if signum:
            RECEIVED[:] = [signum]
            STOP.set()
    return bool(signum)


def check(where: str) -> None:
    if stopping():
        raise interrupted(where)


class StopOnSignal(Callback):
    """Checkpoints the exact training position and stops when a stopping signal has arrived."""

    def __init__(self, saved: list[Path]):
        self.saved = saved

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if stopping(pl_module.device):
            trainer.save_checkpoint("last.ckpt")
            raise interrupted(f"at step {trainer.global_step}; checkpointed to {', '.join(map(str, self.saved))}")

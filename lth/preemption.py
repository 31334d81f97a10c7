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

# Light on purpose: `lth.cli.main` installs the handlers before it imports torch, so that a signal during the
# seconds of imports, configuration and data checks is answered like one during training.

# Set by a stopping signal; checked after every training batch and between pieces of work.
STOP = threading.Event()
RECEIVED: list[int] = []  # the signal that set STOP
SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)
REQUEUE = 3  # the exit code after SIGUSR1: checkpointed, not failed


_TRAINING: list[bool] = []  # non-empty inside `stop_on_signals`: a signal waits there for the next checkpoint


class Interrupted(BaseException):
    """A signal asked the command to stop; what it was training is checkpointed. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way (a file read, a report) takes it for a failure."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = REQUEUE if signum == signal.SIGUSR1 else 128 + signum


def _received(signum, frame) -> None:
    if signum == signal.SIGINT and STOP.is_set():
        raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait for the checkpoint
    RECEIVED[:] = [signum]
    STOP.set()
    if not _TRAINING:  # nothing is being trained, so nothing to checkpoint: stop here (every file is written whole)
        raise interrupted("with nothing in training to checkpoint")


@contextmanager
def installed() -> Iterator[None]:
    """Every command's first act (`lth.cli.main`): a stopping signal at any moment ends the command with its exit code
    and one line (SIGUSR1 3, SIGTERM 143, SIGINT 130), never with Python's default (SIGUSR1 kills silently, 138).
    The handlers the caller had are back afterwards (`main` called from Python, as the tests do)."""
    STOP.clear()
    RECEIVED.clear()
    previous = {s: signal.signal(s, _received) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Inside: a stopping signal sets `STOP`, and training checkpoints at its next step and raises `Interrupted`."""
    STOP.clear()
    RECEIVED.clear()
    previous = {s: signal.signal(s, _received) for s in SIGNALS}
    _TRAINING.append(True)
    try:
        yield
    finally:
        _TRAINING.pop()
        for s, handler in previous.items():
            signal.signal(s, handler)


def interrupted(where: str) -> Interrupted:
    signum = RECEIVED[0]
    return Interrupted(f"stopped by {signal.Signals(signum).name} {where}", signum)


def stopping(device=None) -> bool:
    """Whether a stopping signal has arrived: at any rank, under data parallelism, so that every rank stops at
    the same step (a signal reaches the ranks at different moments; a rank one step ahead would wait for the
    others' gradients for ever)."""
    from lth import distributed

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

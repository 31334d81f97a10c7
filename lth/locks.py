"""Who trains what: an advisory lock (flock) per arm of a run, held while a process trains it. The kernel
releases it when the holder dies, so a killed job leaves no stale lock; the lock file names its holder."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from lth import distributed
from lth.preemption import STOP, interrupted

# How often a process waiting for another's result looks again, and how long it allows a process it builds on to
# start (import torch, check its data) and take its lock.
WAIT_SECONDS = 2.0
START_SECONDS = 60.0


class Busy(RuntimeError):
    """Another process is training an arm this invocation was asked to train: nothing to do here."""


def _try(path: Path) -> IO[str] | None:
    """The open handle that holds the lock (closing it releases the lock), or None if another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - the handle is the lock; the caller closes it
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"host {socket.gethostname()} pid {os.getpid()} job {os.environ.get('SLURM_JOB_ID', '-')}")
    handle.flush()
    return handle


# The locks this process holds. flock() locks an open file, not a process: a second handle on a lock this process
# holds would find it taken, and a process would wait for ever on itself.
MINE: set[Path] = set()


def held_elsewhere(path: Path) -> bool:
    if not path.exists() or path.resolve() in MINE:
        return False
    handle = _try(path)
    if handle:
        handle.close()
    return handle is None


@contextmanager
def claim(path: Path) -> Iterator[None]:
    """The lock, held inside the block. Retried for a second, since another process may hold it for an instant to
    see whether the arm is in progress (`held_elsewhere`)."""
    for _ in range(10):
        if handle := _try(path):
            break
        time.sleep(0.1)
    else:
        raise Busy(path.read_text().strip() or "another process")
    MINE.add(path.resolve())
    try:
        yield
    finally:
        MINE.discard(path.resolve())
        handle.close()


@contextmanager
def held(path: Path) -> Iterator[None]:
    """The lock for a moment of work, waiting for it as long as it takes (the results ledger's); a rank other than
    0, which writes nothing, needs none."""
    if not distributed.writer():
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def taken_up(path: Path, lock: Path, waiting: Callable[[], None], what: str) -> bool:
    """Whether `path` exists or another process holds `lock` (it is making `path`), allowing a process started at the
    same moment (a sweep starts a ticket's job and its controls' together) `START_SECONDS` to take its lock."""
    deadline = time.monotonic() + START_SECONDS
    return _poll(lambda: path.exists() or held_elsewhere(lock), lambda: time.monotonic() >= deadline, waiting, what)


def wait_while_held(path: Path, lock: Path, waiting: Callable[[], None], what: str) -> bool:
    """Wait for `path` while another process holds `lock` (it is making `path`): True once `path` exists, False
    if it does not and nobody is making it."""
    return _poll(path.exists, lambda: not held_elsewhere(lock), waiting, what)


def _poll(ready: Callable[[], bool], hopeless: Callable[[], bool], waiting: Callable[[], None], what: str) -> bool:
    """Look every `WAIT_SECONDS` until `ready()` (True) or `hopeless()` (then whether it became ready meanwhile).
    `waiting()` is called once, when the wait begins; a stopping signal ends it."""
    said = False
    while not ready():
        if hopeless():
            return ready()
        if not said:
            waiting()
            said = True
        if STOP.wait(WAIT_SECONDS):
            raise interrupted(f"while {what}")
    return True

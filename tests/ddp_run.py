"""Run `lth` as one rank of a data-parallel run, with a test's hooks; Lightning's launcher starts the other ranks
with this same command line, so they run with the same hooks.

    python tests/ddp_run.py [--float64] [--kill-at LEVEL:STEP[:RANK]] [--corrupt-masks-on-rank1] [--forbid-writes-off-rank0 DIR] lth-args...

--kill-at SIGKILLs the whole job right after that optimizer step, or only rank RANK.
"""

import builtins
import os
import signal
import sys
from pathlib import Path

import torch

from lth import cli, distributed, imp
from lth.module import MaskedModule

args = sys.argv[1:]
hooks = {}
while args and args[0].startswith("--") and args[0] in ("--float64", "--kill-at", "--corrupt-masks-on-rank1", "--forbid-writes-off-rank0"):
    flag = args.pop(0)
    hooks[flag] = args.pop(0) if flag in ("--kill-at", "--forbid-writes-off-rank0") else True

if "--float64" in hooks:
    torch.set_default_dtype(torch.float64)

if "--kill-at" in hooks:  # as a scheduler, a power cut or a failing node kills it (the test starts it in its own session)
    kill_level, kill_step, *kill_rank = map(int, hooks["--kill-at"].split(":"))
    current = {"level": None}
    train, step = imp.train_pack, MaskedModule.optimizer_step

    def tracked_train(members, *rest):
        current["level"] = members[0].level
        return train(members, *rest)

    def killing_step(self, *a, **k):
        step(self, *a, **k)
        if current["level"] == kill_level and self.global_step == kill_step:
            if not kill_rank and distributed.writer():
                os.killpg(os.getpgid(0), signal.SIGKILL)
            elif kill_rank == [distributed.WORLD.rank]:
                os.kill(os.getpid(), signal.SIGKILL)

    imp.train_pack, MaskedModule.optimizer_step = tracked_train, killing_step

if "--corrupt-masks-on-rank1" in hooks:
    broadcast = distributed.broadcast

    def corrupting(value):
        value = broadcast(value)
        if distributed.WORLD.rank == 1 and isinstance(value, dict) and value and all(isinstance(v, torch.Tensor) for v in value.values()):
            first = next(iter(value))
            value = {**value, first: value[first].clone()}
            value[first].view(-1)[0] = ~value[first].view(-1)[0]
        return value

    distributed.broadcast = corrupting

if "--forbid-writes-off-rank0" in hooks:
    guarded = Path(hooks["--forbid-writes-off-rank0"]).resolve()
    real_open, real_os_open, real_mkdir, real_replace = builtins.open, os.open, os.mkdir, os.replace

    def refuse(path) -> None:
        if distributed.WORLD.rank != 0 and Path(path).resolve().is_relative_to(guarded):
            raise AssertionError(f"rank {distributed.WORLD.rank} wrote {path}")

    def open_(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *a, **k)

    def os_open(path, flags, *a, **k):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *a, **k)

    def mkdir(path, *a, **k):
        refuse(path)
        return real_mkdir(path, *a, **k)

    def replace(src, dst, *a, **k):
        refuse(dst)
        return real_replace(src, dst, *a, **k)

    builtins.open, os.open, os.mkdir, os.replace = open_, os_open, mkdir, replace

sys.exit(cli.main(args))

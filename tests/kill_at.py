"""Run `lth` and SIGKILL the process at a chosen point, as a scheduler or a power cut would.

    python tests/kill_at.py POINT lth-args...

POINT is `LEVEL:STEP` (right after that optimizer step of that level's ticket) or `LEVEL:recorded`
(right after that level's results row is written).
"""

import os
import signal
import sys

from lth import cli, imp
from lth.module import MaskedModule

point, args = sys.argv[1], sys.argv[2:]
kill_level, kill_at = point.split(":")
current = {"level": None}

train, record, step = imp.train_pack, imp.Run.record, MaskedModule.optimizer_step


def tracked_train(members, *rest):
    current["level"] = members[0].level
    return train(members, *rest)


def killing_record(self, row):
    record(self, row)
    if kill_at == "recorded" and row.level == int(kill_level):
        os.kill(os.getpid(), signal.SIGKILL)


def killing_step(self, *a, **k):
    step(self, *a, **k)
    if kill_at != "recorded" and current["level"] == int(kill_level) and self.global_step == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)


imp.train_pack, imp.Run.record, MaskedModule.optimizer_step = tracked_train, killing_record, killing_step
sys.exit(cli.main(args))

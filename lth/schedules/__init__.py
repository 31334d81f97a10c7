"""Pruning schedules (`prune.schedule`), one file each: a subclass of `lth.schedules.base.Schedule`, listed
here. The config accepts exactly these names; `prune.<name>` holds a schedule's own settings."""

from lth.schedules.base import Schedule
from lth.schedules.gradual import Gradual
from lth.schedules.iterative import Iterative
from lth.schedules.oneshot import Oneshot

SCHEDULES: dict[str, Schedule] = {s.name: s for s in (Iterative(), Oneshot(), Gradual())}

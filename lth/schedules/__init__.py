"""Pruning schedules (`prune.schedule`), one file each: a subclass of `lth.schedules.base.Schedule`, found by
`lth.registry`. The config accepts exactly these names; `prune.<name>` holds a schedule's own settings."""

from lth.registry import discover
from lth.schedules.base import Schedule

SCHEDULES: dict[str, Schedule] = discover(__name__, Schedule)

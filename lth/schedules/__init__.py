"""Pruning schedules (`prune.schedule`), one file each: `level_masks(run, level, module)` says which weights
level `level` trains, made from what (today: iterative levels, each pruning the previous level's ticket)."""

from collections.abc import Callable

from lth.schedules import iterative

SCHEDULES: dict[str, Callable] = {"iterative": iterative.level_masks}

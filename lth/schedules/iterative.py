"""Iterative pruning (Frankle & Carbin 2019, §2): each level removes the fraction `prune.fraction` of the
weights its chain's previous level kept, trained; `prune.levels` levels."""

from lth.schedules.base import Schedule


class Iterative(Schedule):
    name = "iterative"
    order = 0

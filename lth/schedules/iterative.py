"""Iterative pruning (Frankle & Carbin 2019, §2): each level removes the fraction `prune.fraction` of the
weights its chain's previous level kept, trained; `prune.levels` levels."""


def fraction(config) -> float:
    return config.fraction


def check(config) -> str | None:
    if config.target is not None:
        return "prune.target: only the oneshot schedule prunes to a target; iterative removes prune.fraction per level"
    return None

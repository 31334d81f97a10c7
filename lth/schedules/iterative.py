"""Iterative pruning (Frankle & Carbin 2019, §2): each level removes the fraction `prune.fraction` of the
weights its chain's previous level kept, trained; `prune.levels` levels."""

MASKS_FROM_TRAINING = False


def fraction(config) -> float:
    return config.fraction


def check(config, steps) -> str | None:
    if (config.begin_step, config.end_step, config.frequency) != (None, None, None):
        return "prune.begin_step, prune.end_step, prune.frequency: only the gradual schedule uses them"
    if config.target is not None:
        return "prune.target: only the oneshot schedule prunes to a target; iterative removes prune.fraction per level"
    return None

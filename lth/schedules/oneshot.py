"""One-shot pruning (Han et al. 2015; Liu et al. 2019, §4; as TF-MOT's ConstantSparsity and NVIDIA's ASP do it):
train the dense network, prune it once so that `prune.target` of the weights remain, then train the arms on
that mask. It is one level of `iterative` with fraction 1 - target."""

MASKS_FROM_TRAINING = False


def fraction(config) -> float:
    return 1.0 - config.target


def check(config, steps) -> str | None:
    if (config.begin_step, config.end_step, config.frequency) != (None, None, None):
        return "prune.begin_step, prune.end_step, prune.frequency: only the gradual schedule uses them"
    if config.target is None or not 0.0 < config.target < 1.0:
        return f"prune.target: the oneshot schedule needs the fraction of weights to keep, in (0, 1), got {config.target}"
    if config.levels != 1:
        return f"prune.levels: the oneshot schedule has one pruned level; set prune.levels: 1 (got {config.levels})"
    return None

"""A run's durations in optimizer steps (`lth.config.steps` computes them from the experiment)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Steps:
    """One step is one batch; the last partial batch of an epoch is dropped, so every epoch has the same number
    of steps."""

    steps_per_epoch: int
    total_steps: int
    rewind_step: int
    milestone_steps: tuple[int, ...]
    eval_every: int
    checkpoint_every: int
    val_size: int
    warmup_steps: int = 0  # the learning rate rises linearly from 0 over these first steps

"""What a pruning schedule is: how much of its remaining weights a chain loses per pruned level, what is wrong
with the experiment's settings for it, and whether level 1's masks come out of the ticket's own training
(gradual pruning), with the training hooks that make them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from lightning.pytorch.callbacks import Callback

from lth.masks import Masks
from lth.ranking import Channels, Weights
from lth.steps import Steps

# prune(state, masks, fractions) -> masks: the experiment's method and ranking on a network's whole state (weights, buffers,
# masks), for hooks that prune as training goes
Prune = Callable[[dict[str, torch.Tensor], Masks, dict[str, float]], Masks]


class Schedule:
    """A pruning schedule (`prune.schedule`): the fraction each pruned level removes, its settings' check, and the
    hooks it adds to the ticket's training at any level."""

    name: ClassVar[str]
    Params: ClassVar[type | None] = None  # its settings under `prune.<name>`
    order: ClassVar[int] = 100  # where it stands in the listing of schedules
    # Level 1's masks come out of the ticket's own training (`hooks`), so the other arms of level 1 train after it.
    masks_from_training: ClassVar[bool] = False

    def fraction(self, params: Any, fraction: float) -> float:
        """The fraction of its remaining weights a chain loses at each pruned level (`prune.fraction` given)."""
        return fraction

    def check(self, params: Any, prune: Any, steps: Steps) -> str | None:
        """What is wrong with the experiment's `prune` settings for this schedule (one line)."""
        return None

    def hooks(self, params: Any, level: int, fractions: dict[str, float], prune: Prune, unit: Weights | Channels) -> list[Callback]:
        """Callbacks for the ticket's training at `level` (0: the dense network): gradual pruning prunes level 1 as it
        trains; an early-bird schedule watches level 0's masks and may end it early (`MaskedModule.end_early`). A hook
        keeps its per-run state in `lth.packing.member_states` of the checkpoints, never in its own attributes alone."""
        return []

    def may_end_early(self, level: int) -> bool:
        """Whether its hooks may end the ticket's training at `level` before its last step: a pack ends as one, so
        such a ticket trains alone."""
        return False

    def settled_at(self, params: Any) -> int:
        """The step from which the ticket of level 1 is the network its results line describes: early stopping
        chooses only among evaluations from there on."""
        return 0

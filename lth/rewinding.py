"""What is rewound (Frankle & Carbin 2019, §2; Frankle et al. 2020, §3 "rewinding to iteration k"): the dense
run's complete training state at the rewind step — weights, optimizer state, LR-schedule position and data
position (the global step, from which the data stream is a pure function) — saved once as `rewind.ckpt`,
and the checkpoint each arm of a level starts from: that state with the level's masks applied.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from lth import distributed
from lth.masks import Masks
from lth.run_dir import REWIND_CKPT, RunDir


class RewindCapture(Callback):
    """Saves the dense run's training state when it reaches the rewind step (at the start of training for
    step 0), unless every member has it already."""

    def __init__(self, step: int, paths: list[Path]):
        self.step, self.paths = step, paths

    def _maybe_save(self, trainer: L.Trainer) -> None:
        # Whether to save is rank 0's answer: saving is collective (a barrier), and a rank that looked after rank 0
        # had written the file skipped it and left rank 0 waiting for ever (a hang seen in a two-rank CI run).
        if trainer.global_step == self.step and distributed.broadcast(not all(p.exists() for p in self.paths)):
            trainer.save_checkpoint(REWIND_CKPT)  # `lth.training.MemberCheckpoints` writes it to each member's rewind file

    def on_train_start(self, trainer, pl_module):
        self._maybe_save(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._maybe_save(trainer)


def start_checkpoint(path: Path, rewind: Path, masks: Masks, optimizer: str, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """The rewind point `rewind` with this level's masks applied, written to `path` (an arm's start.ckpt): the
    LR-schedule and data position of the rewind step, the rewind-point weights unless `weights` replaces them,
    and its optimizer state under `optimizer: restore` or an empty one under `fresh` (`prune.rewind_optimizer`,
    the same for every arm; the learning rate is the dense run's at the rewind step either way). Made once,
    then read from disk.
    """
    if not path.exists():
        checkpoint = RunDir.load(rewind)
        state = checkpoint["state_dict"]
        if weights is not None:
            state.update({f"model.{k}": v.clone() for k, v in weights.items()})
        if optimizer == "fresh":
            for optimizer_state in checkpoint["optimizer_states"]:
                optimizer_state["state"] = {}
        for name, mask in masks.items():
            state[f"model.{name}_mask"] = mask.clone()
            state[f"model.{name}"] = state[f"model.{name}"] * mask
        checkpoint["callbacks"] = {}
        checkpoint.pop("lth", None)  # validation history and timing belong to the dense run
        RunDir.save(checkpoint, path)
    distributed.barrier()  # rank 0 wrote it; every rank reads it next
    return path

"""The LightningModule that owns a network and its pruning masks."""

from __future__ import annotations

import time

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from lth import masks as M
from lth.config import Schedule, TrainConfig
from lth.models import prunable_names


class MaskedModule(L.LightningModule):
    """A network whose prunable weights each carry a bool buffer `<weight>_mask` on the same submodule.

    Parameter names stay as the model defines them (no `weight_orig`), and the masks travel in every
    state_dict and Lightning checkpoint. Pruned weights are zeroed in place right after each optimizer step
    (one fused multiply, ~0% of step time) rather than by a `w * mask` in every forward: momentum and weight
    decay may move a pruned weight during the step, but never past it, so weights are exactly 0 after every
    step and in every checkpoint.
    """

    def __init__(self, model: nn.Module, train: TrainConfig, schedule: Schedule, num_classes: int):
        super().__init__()
        self.model, self.train_cfg, self.schedule = model, train, schedule
        self.prunable = prunable_names(model)
        for name in self.prunable:
            owner, attr = self._owner(name)
            owner.register_buffer(f"{attr}_mask", torch.ones_like(getattr(owner, attr), dtype=torch.bool))
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
        self.val_loss = torchmetrics.MeanMetric()
        self.val_history: list[dict[str, float]] = []  # one entry per evaluation: step, val_loss, val_acc
        self.train_seconds = 0.0
        self._fit_started = 0.0

    def _owner(self, name: str) -> tuple[nn.Module, str]:
        module_name, _, attr = name.rpartition(".")
        return self.model.get_submodule(module_name), attr

    # -- masks ---------------------------------------------------------------------------------------------

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: self.model.get_parameter(name) for name in self.prunable}

    def masks(self) -> M.Masks:
        return {name: self.model.get_buffer(f"{name}_mask") for name in self.prunable}

    def set_masks(self, new: M.Masks) -> None:
        current = self.masks()
        if set(new) != set(current):
            raise ValueError(f"masks name layers {sorted(set(new) ^ set(current))[:3]} that the model does not have as prunable")
        for name, mask in new.items():
            if mask.shape != current[name].shape:
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, the model's weight {tuple(current[name].shape)}")
            current[name].copy_(mask)
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        masks = self.masks()
        torch._foreach_mul_([self.model.get_parameter(n) for n in masks], list(masks.values()))

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.apply_masks()

    # -- training ------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self):
        cfg = self.train_cfg
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.schedule.milestone_steps), cfg.gamma)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.val_loss.update(F.cross_entropy(logits, y, reduction="none"))
        self.val_acc.update(logits, y)

    def on_validation_epoch_end(self):
        loss, acc = float(self.val_loss.compute()), float(self.val_acc.compute())
        self.val_loss.reset()
        self.val_acc.reset()
        if not self.trainer.sanity_checking:
            self.val_history.append({"step": self.global_step, "val_loss": loss, "val_acc": acc})
        self.log_dict({"val/loss": loss, "val/acc": acc}, prog_bar=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.test_acc.update(self(x), y)

    def on_test_epoch_end(self):
        self.log("test/acc", self.test_acc.compute())
        self.test_acc.reset()

    # -- state that checkpoints carry besides weights and masks ---------------------------------------------

    def on_train_start(self):
        self.apply_masks()
        self._fit_started = time.perf_counter()

    def elapsed(self) -> float:
        return self.train_seconds + time.perf_counter() - self._fit_started

    def on_save_checkpoint(self, checkpoint):
        checkpoint["lth"] = {"val_history": self.val_history, "train_seconds": self.elapsed()}

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("lth", {})
        self.val_history = list(state.get("val_history", []))
        self.train_seconds = state.get("train_seconds", 0.0)

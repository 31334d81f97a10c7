"""The LightningModule that owns a network and its pruning masks, for one run or a pack of K runs."""

from __future__ import annotations

import bisect
import math
import time
import warnings
from collections.abc import Callable
from functools import partial

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from lth import distributed
from lth import masks as M
from lth.config import TrainConfig
from lth.inputs import Inputs, call, side_by_side, size
from lth.models import logits, prunable_names
from lth.packing import member_states, unpack_state
from lth.steps import Steps

# The training step runs the optimizer itself (see `optimizer_step`), so it returns no loss for Lightning to
# backpropagate; Lightning warns once about that.
warnings.filterwarnings("ignore", message=".*`training_step` returned `None`")
# Lightning's own call of a torch pytree API that torch deprecated (lightning/pytorch/utilities/_pytree.py), at every
# fit: nothing a user of lth can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated", module=r"lightning\.pytorch\.utilities\._pytree")
# Lightning probes for SLURM at every fresh fit and, where `srun` exists, advises prepending it; lth starts a run's
# ranks itself in a batch task (`lth.distributed.start`), so the advice never applies.
warnings.filterwarnings("ignore", message="The `srun` command is available on your system but is not used", module=r"lightning\.fabric\.plugins")

Penalty = Callable[[nn.Module, int], torch.Tensor]  # a term added to the training loss, given the network and its pack (`Method.penalty`)

# Eager steps before the first CUDA-graph capture: they let cuDNN, the caching allocator and the optimizer's
# lazily created state settle, as the CUDA-graphs section of the PyTorch CUDA semantics notes advises.
EAGER_STEPS_BEFORE_CAPTURE = 3


# Per split of `DataModule.val_dataloader`, in its order, each evaluation's mean loss and accuracy per run.
SPLITS = ("val", "test", "train")
EVALUATION = tuple(f"{split}_{metric}" for split in SPLITS for metric in ("loss", "acc"))

# A run has diverged when an evaluation finds a weight that is not finite, or a validation loss that is not
# finite or above DIVERGED times that of a uniform guess (ln of the class count): SGD at a learning rate far too
# high turns weights to NaN, Adam drives the loss to ~1e18 at chance accuracy. Neither is a result. A network
# that merely overfits stays far below (the quickstart's worst validation loss is under 3 × ln 10).
DIVERGED = 100


class Diverged(RuntimeError):
    """Members of a pack (by index) whose training diverged, each with why, at `step`."""

    def __init__(self, members: dict[int, str], step: int):
        super().__init__(f"diverged at step {step}")
        self.members, self.step = members, step


class PerRunMean(torchmetrics.Metric):
    """The mean of a per-example value ([B, K]: a loss, or 1.0 for a correct prediction) for each of K packed
    runs, summed on the device."""

    full_state_update = False

    def __init__(self, pack: int):
        super().__init__()
        self.add_state("total", torch.zeros(pack), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.total += values.sum(0)
        self.count += len(values)

    def compute(self) -> torch.Tensor:
        return self.total / self.count



def rate(steps: Steps, train: TrainConfig, step: int) -> float:
    """The learning rate at `step` as a multiple of `train.lr`: a linear warm-up from 0 over `warmup` steps (Goyal et al.
    2017, §2.2, as OpenLTH warms up its ImageNet ResNets), then gamma at each milestone ("step"), or a cosine from 1
    down to 0 at the end of training ("cosine"; Loshchilov & Hutter 2017)."""
    warmup = steps.warmup_steps
    ramp = min(1.0, step / warmup) if warmup else 1.0
    if train.lr_schedule == "cosine":
        return ramp * 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0, step - warmup) / (steps.total_steps - warmup))))
    return ramp * train.gamma ** bisect.bisect_right(list(steps.milestone_steps), step)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW's parameter groups: decay on the weight matrices and kernels, none on biases, norms' scales (every
    parameter of fewer than 2 dimensions) or embeddings, as BERT is trained (Devlin et al. 2019)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    parameters = list(model.parameters())
    decayed = [p for p in parameters if p.dim() >= 2 and id(p) not in embeddings]
    plain = [p for p in parameters if p.dim() < 2 or id(p) in embeddings]
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


@torch.no_grad()
def clip_per_run(parameters: list[torch.Tensor], pack: int, max_norm: float) -> None:
    """Scale each packed run's gradients to at most `max_norm` in global L2 norm, its own norm: a packed parameter
    is its runs' tensors stacked along dim 0. Tensor operations only, no host sync, so a CUDA graph captures it."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([g.reshape(pack, -1).float().pow(2).sum(1) for g in grads]).sum(0).sqrt()  # reshape: channels-last kernels
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(scale.repeat_interleave(len(g) // pack).view(-1, *[1] * (g.dim() - 1)).to(g.dtype))


class MaskedModule(L.LightningModule):
    """A network whose prunable weights each carry a bool buffer `<weight>_mask` on the same submodule.

    Parameter names stay as the model defines them (no `weight_orig`), and the masks travel in every
    state_dict and Lightning checkpoint. Pruned weights are zeroed in place right after each optimizer step
    (one fused multiply) rather than by a `w * mask` in every forward: momentum and weight decay may move a
    pruned weight during the step, but never past it, so weights are exactly 0 after every step and in every
    checkpoint.

    `pack` > 1: the model was built with `pack=K` (`lth.models`) and holds K runs that train in lockstep;
    the loss is the sum of the K runs' mean losses, so each run's gradient is its own. Metrics, validation
    history and test accuracy are per run.

    On CUDA the whole training step — forward, backward, optimizer step, masking — is captured once as a
    CUDA graph and replayed, which removes the per-kernel launch cost that dominates small networks, and its
    forward and loss are compiled by `torch.compile`, which fuses the memory-bound layers. A change
    of learning rate (a milestone) captures it again, since the graph holds the rate it was captured with.
    """

    def __init__(self, model: nn.Module, train: TrainConfig, steps: Steps, num_classes: int, pack: int = 1,
                 followers: dict[str, tuple[str, ...]] | None = None, penalty: Penalty | None = None):
        super().__init__()
        self.model, self.train_cfg, self.steps, self.pack = model, train, steps, pack
        self.num_classes = num_classes
        self.prunable = prunable_names(model)
        # Under channel pruning (`lth.channels`): the biases and batch-norm scales and shifts indexed by each
        # prunable layer's output channels, zeroed with a removed channel so that it outputs exactly 0.
        self.followers = followers or {}
        # A term added to the loss (the pruning method's `penalty`, for the networks its chain prunes next).
        self.penalty = penalty
        for name in self.prunable:
            owner, attr = self._owner(name)
            owner.register_buffer(f"{attr}_mask", torch.ones_like(getattr(owner, attr), dtype=torch.bool))
        self.evaluation = nn.ModuleDict({key: PerRunMean(pack) for key in EVALUATION})
        # Per run, one entry per evaluation: step and `EVALUATION`.
        self.val_history: list[list[dict[str, float]]] = [[] for _ in range(pack)]
        self.ended: list[dict | None] = [None] * pack  # per run, where and why a hook ended its training early (`end_early`)
        self.last_loss: torch.Tensor | None = None  # [K], of the latest step
        self.train_seconds = 0.0  # in fits that ended, this one's included once it ends (`on_train_end`)
        self._fit_started: float | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_x: torch.Tensor | None = None  # the graph's inputs (`_staged`)
        self._static_y: torch.Tensor | None = None
        self._eager_steps = 0
        self._keep: list[torch.Tensor] | None = None  # float copies of the masks, made when training starts

    def _owner(self, name: str) -> tuple[nn.Module, str]:
        module_name, _, attr = name.rpartition(".")
        return self.model.get_submodule(module_name), attr

    # -- masks ---------------------------------------------------------------------------------------------

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: self.model.get_parameter(name) for name in self.prunable}

    def masks(self) -> M.Masks:
        return {name: self.model.get_buffer(f"{name}_mask") for name in self.prunable}

    def runs(self) -> list[tuple[dict[str, torch.Tensor], M.Masks]]:
        """Each packed run's whole state (weights, buffers, masks; detached) and its masks, as a criterion reads a
        network at a level boundary: what a hook that prunes or watches masks mid-training scores."""
        states = unpack_state({n: v.detach() for n, v in self.model.state_dict().items()}, self.pack)
        return list(zip(states, unpack_state(self.masks(), self.pack)))

    def set_masks(self, new: M.Masks) -> None:
        current = self.masks()
        if set(new) != set(current):
            raise ValueError(f"masks name layers {sorted(set(new) ^ set(current))[:3]} that the model does not have as prunable")
        for name, mask in new.items():
            if mask.shape != current[name].shape:
                raise ValueError(f"mask for {name} has shape {tuple(mask.shape)}, the model's weight {tuple(current[name].shape)}")
            current[name].copy_(mask)
        if self._keep is not None:  # mid-training (gradual pruning): the captured step reads these in place
            for keep, mask in zip(self._keep, self._masking()[1]):
                keep.copy_(mask)
        self.apply_masks()

    def _masking(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The parameters that masks zero, and their bool masks: the prunable weights, then the followers of
        their output channels (kept while the channel keeps a weight)."""
        masks = self.masks()
        followed = [(self.model.get_parameter(f), M.channels_alive(masks[layer])) for layer, fs in self.followers.items() for f in fs]
        return [*self.weights().values(), *(p for p, _ in followed)], [*masks.values(), *(k for _, k in followed)]

    @torch.no_grad()
    def apply_masks(self) -> None:
        torch._foreach_mul_(*self._masking())

    # -- training ------------------------------------------------------------------------------------------

    def forward(self, x: Inputs) -> torch.Tensor:
        """Logits [B, K, classes] for the K runs' inputs side by side, [B, K·C, ...] (or a dict of one run's, `lth.inputs`)."""
        return logits(call(self.model, x)).view(size(x), self.pack, self.num_classes)

    def evaluate(self, x: Inputs) -> torch.Tensor:
        """Logits [B, K, classes] for inputs [B, C, ...] that all K runs see (validation and test)."""
        return self(side_by_side(x, self.pack))

    def losses(self, x: Inputs, y: torch.Tensor) -> torch.Tensor:
        """Each run's mean training cross-entropy (label-smoothed as `train.label_smoothing` says), [K]; y is [B, K]."""
        smoothing = self.train_cfg.label_smoothing
        return F.cross_entropy(self(x).flatten(0, 1), y.flatten(), reduction="none", label_smoothing=smoothing).view(len(y), self.pack).mean(0)

    def configure_optimizers(self):
        # NHWC convolution kernels, cuDNN's and oneDNN's: a ResNet-20 step takes 2.6 ms instead of 3.9 (captured,
        # on an H100) and 191 ms instead of 235 (a 2-core CPU; README, Performance). Other layers ignore it.
        self.model.to(memory_format=torch.channels_last)
        cfg = self.train_cfg
        capturable = self.device.type == "cuda"  # Adam's step count lives on the GPU, so a CUDA graph can advance it
        if cfg.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adam":
            optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, capturable=capturable)
        else:
            optimizer = torch.optim.AdamW(decay_groups(self.model, cfg.weight_decay), lr=cfg.lr, capturable=capturable)
        milestones = list(self.steps.milestone_steps)
        if cfg.lr_schedule == "step" and not self.steps.warmup_steps:
            scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, cfg.gamma)
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(rate, self.steps, cfg))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _step(self, optimizer: torch.optim.Optimizer, x: Inputs, y: torch.Tensor) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        # Dict inputs (token batches) run eagerly: padded to each batch's longest, their shapes change at every step,
        # and the compiled loss would compile again for each new length.
        losses = (self._train_losses if isinstance(x, torch.Tensor) else self.losses)(x, y)
        loss = losses.sum()  # the runs share no parameter, so each gets the gradient of its own loss
        if self.penalty is not None:
            loss = loss + self.penalty(self.model, self.pack)
        loss.backward()
        if distributed.WORLD.size > 1:
            distributed.average_gradients(list(self.model.parameters()))
        if self.train_cfg.clip_grad_norm is not None:
            clip_per_run(list(self.model.parameters()), self.pack, self.train_cfg.clip_grad_norm)
        optimizer.step()
        self._mask_step()
        return losses.detach()

    @torch.no_grad()
    def _mask_step(self) -> None:
        torch._foreach_mul_(self._masked_weights, self._keep)

    def training_step(self, batch, batch_idx):
        x, y = batch
        optimizer = self.trainer.optimizers[0]
        # Eager: on a CPU; in a warm-up, where a graph would be captured again at every step; across ranks, whose
        # all-reduce a graph would have to capture too; for dict inputs, whose padded shapes a graph cannot replay.
        if (y.device.type != "cuda" or self.global_step < self.steps.warmup_steps or distributed.WORLD.size > 1
                or not isinstance(x, torch.Tensor)):
            self.last_loss = self._step(optimizer, x, y)
            # Lightning refuses a step that returns nothing across ranks; what it returns is only reported
            # (`backward` below does nothing: the step above has done it).
            return self.last_loss.sum() if distributed.WORLD.size > 1 else None
        rates = [group["lr"] for group in optimizer.param_groups]
        if x.dim() == 4:  # the graph's input layout; the eager steps use it too, or the compiled loss recompiles
            x = x.contiguous(memory_format=torch.channels_last)
        x, y = self._staged(x, y)
        if self._graph is None or rates != self._graph_rates:
            if self._eager_steps < EAGER_STEPS_BEFORE_CAPTURE:
                self._eager_steps += 1
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self.last_loss = self._step(optimizer, x, y)
                torch.cuda.current_stream().wait_stream(side)
                return None
            self._capture(optimizer, x, y, rates)
        self._graph.replay()
        self.last_loss = self._static_loss
        return None

    def _staged(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch copied into the fixed input tensors the graph reads: the same tensors in the eager warm-up steps
        as in the capture. A batch is a view into the dataset on the device, and once its shapes have changed
        (a pack's first level after the dense one) Dynamo guards on its storage offset: fed a fresh tensor at
        capture, the compiled loss recompiled inside the capture, and with `train.deterministic: false` Inductor's
        autotuning synchronised the device there, which a capture forbids (found on an H200; issue 38)."""
        if self._static_x is None:  # once a fit: a graph holds their addresses
            self._static_x, self._static_y = torch.empty_like(x), torch.empty_like(y)
        self._static_x.copy_(x)
        self._static_y.copy_(y)
        return self._static_x, self._static_y

    def _capture(self, optimizer, x, y, rates) -> None:
        graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        # "thread_local": in the default "global" mode a CUDA call from any thread breaks the capture, and the
        # DataLoader's pin-memory thread (the image-folder stream) allocates pinned buffers and polls their events
        # while this thread captures. It races, so a capture failed only at times (found on an H200; issue 38).
        # The graph has its own memory pool; the previous graph's is freed with it.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._static_loss = self._step(optimizer, x, y)
        self._graph, self._graph_rates = graph, rates

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        optimizer_closure()  # runs training_step, which has stepped the optimizer itself

    def backward(self, loss, *args, **kwargs):
        pass  # `_step` runs the backward pass itself

    def optimizer_zero_grad(self, epoch, batch_idx, optimizer):
        pass  # gradients are reset inside the (captured) step

    def on_train_start(self):
        self.apply_masks()
        # The training step multiplies by float copies of the masks: float × bool takes _foreach_mul_'s slow
        # per-tensor path, 3% of a captured ResNet-20 step on an H100. Made here, after any checkpoint
        # restore, and fixed for the fit (a captured graph holds their addresses).
        self._masked_weights, keep = self._masking()
        self._keep = [mask.to(w.dtype) for w, mask in zip(self._masked_weights, keep)]
        self._graph, self._eager_steps, self._static_x, self._static_y = None, 0, None, None
        # On CUDA, Inductor fuses the batch norms, ReLUs and residual adds that eager mode runs as separate
        # memory-bound kernels: a 16-packed ResNet-20 step takes 22 ms instead of 26 on an H100 (README). Under
        # torch.use_deterministic_algorithms it turns its timing-based autotuning off (PyTorch >= 2.10), so
        # runs stay bit-reproducible. On a CPU it would need a C++ toolchain and compile longer than it saves.
        self._train_losses = torch.compile(self.losses) if self.device.type == "cuda" else self.losses
        self._fit_started = time.perf_counter()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        """Loaders `SPLITS`: the validation split, the test split and the fixed training subset
        (`DataModule.val_dataloader`). The whole pack in one update per metric: per-run losses and hits [B, K]."""
        x, y = batch
        logits = self.evaluate(x)
        correct = (logits.argmax(-1) == y[:, None]).float()  # not the logits' dtype: bf16 counts exactly only to 256
        split = SPLITS[dataloader_idx]
        self.evaluation[f"{split}_loss"].update(F.cross_entropy(logits.flatten(0, 1), y.repeat_interleave(self.pack), reduction="none").view_as(correct))
        self.evaluation[f"{split}_acc"].update(correct)

    def on_validation_epoch_end(self):
        # One copy to the host per evaluation, whatever the pack size: a float() per metric and run would wait
        # on the device 3K times.
        values = torch.stack([self.evaluation[key].compute().view(self.pack) for key in EVALUATION]).tolist()  # torchmetrics squeezes [1]
        for metric in self.evaluation.values():
            metric.reset()
        if not self.trainer.sanity_checking:
            for k, history in enumerate(self.val_history):
                history.append({"step": self.global_step, **{key: v[k] for key, v in zip(EVALUATION, values)}})
            if diverged := self.diverged(values[0]):
                raise Diverged(diverged, self.global_step)

    @torch.no_grad()
    def diverged(self, val_losses: list[float]) -> dict[int, str]:
        """The members whose weights or validation loss say they diverged (`DIVERGED`), with why."""
        finite = torch.ones(self.pack, dtype=torch.bool, device=self.device)
        for parameter in self.model.parameters():  # a packed parameter is its members' stacked along dim 0
            finite &= torch.isfinite(parameter).reshape(self.pack, -1).all(1)  # channels-last conv weights do not view
        limit = DIVERGED * math.log(self.num_classes)
        out = {}
        for k, (ok, loss) in enumerate(zip(finite.tolist(), val_losses)):
            if not ok:
                out[k] = "a weight is not finite"
            elif not math.isfinite(loss) or loss > limit:
                out[k] = f"validation loss {loss:.3g}, above {limit:.3g} ({DIVERGED} × a uniform guess's)"
        return out

    # -- state that checkpoints carry besides weights and masks ---------------------------------------------

    def on_train_end(self):
        self.train_seconds = self.elapsed()
        self._fit_started = None

    def elapsed(self) -> float:
        """Seconds of training in this and earlier processes, counting a fit in progress up to now."""
        running = 0.0 if self._fit_started is None else time.perf_counter() - self._fit_started
        return self.train_seconds + running

    def on_save_checkpoint(self, checkpoint):
        seconds = self.elapsed()
        for state, history, ended in zip(member_states(checkpoint, self.pack), self.val_history, self.ended):
            state.update(val_history=history, train_seconds=seconds, ended=ended)

    def on_load_checkpoint(self, checkpoint):
        members = member_states(checkpoint, self.pack)
        self.val_history = [list(m.get("val_history", [])) for m in members]
        self.train_seconds = max(m.get("train_seconds", 0.0) for m in members)
        self.ended = [m.get("ended") for m in members]

    def end_early(self, why: str) -> None:
        """End this fit after the current step, for every member (a pack trains as one), recording why: a hook's
        decision (an early-bird ticket drawn), which the results line states."""
        self.ended = [{"step": self.trainer.global_step, "why": why}] * self.pack
        self.trainer.should_stop = True

    @property
    def last_step(self) -> int:
        """The step its training ends at: its schedule's last, or the step a hook ended it at."""
        return self.ended[0]["step"] if self.ended[0] else self.steps.total_steps

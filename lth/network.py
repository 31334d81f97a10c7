"""The experiment's network: what it is built from, what it starts from, and that it fits what the experiment says.

`Network` adds to an `Architecture` (`lth.architecture`) what the experiment says about the network: its
batch-norm init, pretrained weights and pruning unit. It is the one place that builds a seed's initialised
network, reads the pretrained weights (and what identifies them) and checks, once at the edge
(`lth.config.validate`), that the configuration fits the network. Nothing here trains: the driver (`lth.imp`)
wraps what is built here in a `MaskedModule` with its training recipe.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lth import channels, pruning
from lth.architecture import Architecture, ModelError
from lth.data import dataset
from lth.datasource import digest_tensor
from lth.flops import dense_macs
from lth.inputs import Fields
from lth.models import MODELS, init_batch_norm, initialise, prunable_names
from lth.packing import auto_pack

if TYPE_CHECKING:
    from lth.data import DatasetSpec
    from lth.methods.base import State
    from lth.ranking import Channels, Weights


@functools.lru_cache(maxsize=1)
def pretrained(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file: PyTorch's (`torch.save` of a state dict, or of a checkpoint holding one under
    `state_dict`), safetensors, or a folder written by `save_pretrained` (its `model.safetensors` or
    `pytorch_model.bin`). Read once per process: the check before any work, the run id and the dense start all ask
    for it, and a transformer's weights are hundreds of MB. Callers copy from it and never change it."""
    path = Path(path)
    if path.is_dir():
        path = next((path / name for name in ("model.safetensors", "pytorch_model.bin") if (path / name).is_file()), path / "model.safetensors")
    if not path.is_file():
        raise ModelError(f"model.weights: {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise ModelError(f"model.weights: {path.name} is a safetensors file: pip install safetensors") from None
    except Exception as err:  # noqa: BLE001 - any failure to read is the same answer: not a state dict lth can read
        raise ModelError(f"model.weights: {path} is not a state dict lth can read ({type(err).__name__})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"model.weights: {path} holds no state dict of tensors")
    return state


@functools.cache
def weights_digest(path: str) -> str:
    """What the weights are, for a run's identity: a sha256 of every tensor's name, dtype, shape and bytes, so that the
    same weights moved, renamed or saved in another format are the same run, and any changed weight another. A file
    that cannot be read has no digest yet: `lth.config.validate` refuses it in one line."""
    try:
        state = pretrained(path)
    except ModelError:
        return "unreadable"
    digest = hashlib.sha256()
    for name in sorted(state):
        digest_tensor(digest, name, state[name])
    return digest.hexdigest()[:16]


def weights_problem(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """What keeps `state` from loading into `model` exactly (one line naming the first few keys), or None."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    given = {k: tuple(v.shape) for k, v in state.items()}
    for what, keys in (("missing", [k for k in expected if k not in given]), ("unexpected", [k for k in given if k not in expected]),
                       ("of another shape", [f"{k} {given[k]} for {expected[k]}" for k in expected if k in given and given[k] != expected[k]])):
        if keys:
            return f"model.weights: {len(keys)} keys {what}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
    return None


@dataclass(frozen=True)
class Network:
    """The experiment's network for its dataset: `model` and `prune` as configured, `spec` the dataset's shapes."""

    # lth.config's ModelConfig and PruneConfig, not imported: lth.config imports this module (a run's identity
    # holds its weights' digest).
    model: Any
    prune: Any
    spec: DatasetSpec

    @classmethod
    def of(cls, cfg: Any) -> Network:
        """An experiment's network (`cfg`: an `lth.config.Experiment`), for the dataset it names."""
        return cls(cfg.model, cfg.prune, dataset(cfg.data))

    @functools.cached_property
    def architecture(self) -> Architecture:
        return Architecture.of(self.model, self.spec)

    @functools.cached_property
    def unit(self) -> Weights | Channels:
        """What the experiment's method removes (`lth.ranking`)."""
        return pruning.unit(self.prune, self.architecture)

    @functools.cached_property
    def example_macs(self) -> int:
        """The dense network's multiply-accumulates per example."""
        return dense_macs(self.architecture)

    def pack(self, requested: int | None) -> int:
        """How many runs train as one packed network: `requested`, or `auto_pack` for the dense network's size; 1 for
        a network not written in lth's packing convention, or fed examples batched by their collate (`lth.user_dataset.Records`)."""
        if not self.architecture.packs or self.spec.records:
            return 1
        return requested or auto_pack(self.example_macs)

    def build(self, seed: int, pack: int = 1, narrow: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """The network at its init for `seed`; `narrow`: with the channels those masks remove taken out
        physically (`lth.channels.narrow`), then initialised afresh at its own widths."""
        torch.manual_seed(seed)  # the init is a function of the seed (OpenLTH leaves it unseeded)
        model = self.architecture.build(pack)
        init_batch_norm(model, self.model.bn_init)
        if narrow is not None:
            model = self.unit.narrow(model, narrow, self.spec.input_shape)
            initialise(model)
            init_batch_norm(model, self.model.bn_init)
        return model

    def followers(self) -> dict[str, tuple[str, ...]]:
        """The biases and batch-norm parameters each prunable layer's output channels index, under a channel unit."""
        return channels.followers(self.unit.structure)

    def plain(self, state: State) -> nn.Module:
        """A plain (unpacked, unmasked) network holding `state`'s weights, masked: what criteria that run the
        network score (`lth.methods.base.Scoring.network`). Built on the meta device: no init is drawn."""
        with torch.device("meta"):
            model = self.architecture.build()
        masks = {k[: -len("_mask")]: v for k, v in state.items() if k.endswith("_mask")}
        model.load_state_dict({k: v * masks[k] if k in masks else v.clone() for k, v in state.items() if not k.endswith("_mask")}, assign=True)
        return model.train()

    def start_from_pretrained(self, model: nn.Module) -> None:
        """Load `model.weights` into a dense network (its mask buffers kept): the start of level 0, and so its rewind
        point (Chen et al. 2020). Nothing to do without them."""
        if self.model.weights is not None:
            model.load_state_dict({**pretrained(self.model.weights), **{k: v for k, v in model.state_dict().items() if k.endswith("_mask")}})

    def problem(self, pack: int | None, ranks: int) -> str | None:
        """What in the configuration does not fit this network, in one line, or None: a pack for a network that does
        not pack or for examples batched by their collate; one of lth's own models, which take one tensor, for dict
        examples; channel pruning of such examples; its builder fails or builds no module; the pretrained weights do not load into it exactly; batch
        norm on several CPU ranks; a pruning glob that matches no layer; nothing to prune; or a method or levels
        that cannot prune it."""
        name, p = self.model.name, self.prune
        if pack not in (None, 1) and self.spec.records:
            return f"pack: {self.spec.name}'s examples are batched by their collate, one run at a time: leave pack unset"
        if pack not in (None, 1) and not self.architecture.packs:
            return (f"pack: {name} is not written in lth's packing convention (its builder takes no `pack`); its runs train one at a time: "
                    "leave pack unset")
        if isinstance(self.spec.input_shape, Fields) and name in MODELS:
            keys = ", ".join(k for k, _, _ in self.spec.input_shape.fields)
            return (f"model: {name} takes one input tensor; {self.spec.name}'s examples are dicts of {keys}: "
                    "name a model that takes them as keywords (a transformers model, or your own by import path)")
        # Asked of the method without tracing the network (`lth.channels.removable`), which needs one input tensor.
        if self.spec.records and pruning.method(p).unit(p.method_params, dict).removes_channels:
            return (f"prune: {p.method} removes channels, found by tracing the network on one input tensor; {self.spec.name}'s examples are "
                    "batched by their collate (dict or padded inputs): prune its weights")
        try:
            with torch.device("meta"):  # shapes alone, no memory and no init
                model = self.architecture.build()
        except Exception as err:  # noqa: BLE001 - a user's own builder may fail in any way; one line, theirs to read
            return (f"model: {name}{f' with {self.model.kwargs}' if self.model.kwargs else ''} could not be built "
                    f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
        if not isinstance(model, nn.Module):
            return f"model: {name} built a {type(model).__name__}, not a torch.nn.Module"
        if self.model.weights is not None:
            try:
                if problem := weights_problem(model, pretrained(self.model.weights)):
                    return problem
            except ModelError as err:
                return str(err)
        if ranks > 1 and not torch.cuda.is_available() and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            return (f"train.devices: {name} has batch norm, whose statistics over the whole batch across ranks (SyncBatchNorm) "
                    "torch computes only on GPUs; on CPUs train it on one process")
        names = prunable_names(model)
        shapes = {n: tuple(model.get_parameter(n).shape) for n in names}
        for key, globs in (("layer_fractions", list(p.layer_fractions)), ("dense_layers", p.dense_layers or [])):
            if unmatched := [g for g in globs if not any(fnmatchcase(n, g) for n in names)]:
                return f"prune.{key}: {unmatched[0]!r} matches no prunable layer of {name} ({', '.join(names)})"
        fractions = pruning.layer_fractions(p, model, names)
        if not any(fractions.values()):
            return f"prune: every prunable layer of {name} is left dense (prune.dense_layers, prune.layer_fractions); nothing would be pruned"
        return pruning.method(p).check(p.method_params, p.strategy, shapes, fractions, self.unit) or self.unit.check_levels(
            shapes, fractions, p.strategy, p.levels)

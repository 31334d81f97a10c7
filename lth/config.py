"""Experiment configuration: typed dataclasses, loaded from YAML plus `--key=value` overrides.

Everything a run needs is validated here, once, before any data is read or any weight is trained;
inner code trusts these objects. Errors are `ConfigError`s whose message is a single line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lth.registry import suggestion
from lth.steps import Steps


class ConfigError(ValueError):
    """A user-facing problem with the experiment: reported as one line, exit code 2."""


_DURATION = re.compile(r"^\s*(\d+)\s*(ep|it)\s*$")


def parse_duration(text: str, what: str) -> tuple[int, str]:
    """'500it' -> (500, 'it'), '2ep' -> (2, 'ep'); a bare '0' means the start of training."""
    if text.strip() == "0":
        return 0, "it"
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{what}: expected a duration like '500it' or '2ep', got {text!r}")
    return int(match.group(1)), match.group(2)


def to_steps(text: str, steps_per_epoch: int, what: str) -> int:
    n, unit = parse_duration(text, what)
    return n * steps_per_epoch if unit == "ep" else n


@dataclass
class ModelConfig:
    # One of lth's networks (`lth.models`: lenet_300_100, conv2/4/6, resnet20/32/56, vgg16, resnet18/50, the MNIST-1D
    # ones), a plugin's, a builder of your own by import path (`package.module:Callable`) or a transformer
    # (`transformers:ClassName`, built from `kwargs` as its config).
    name: str = "mnist1d_mlp"
    # Batch-norm scales at initialisation: "ones" (PyTorch's default) or "uniform" in [0, 1], as OpenLTH
    # initialises its CIFAR ResNets and VGGs (models/bn_initializers.py, `batchnorm_init='uniform'` in their
    # default hparams), which produced Frankle et al.'s (2020) ResNet-20 and VGG-16 numbers.
    bn_init: Literal["ones", "uniform"] = "ones"
    # Keyword arguments of the model's builder (`lth.architecture.Architecture`): a model of your own, named by import path
    # (`model: {name: mymodels:SmallCNN, kwargs: {width: 32}}`), takes its settings here.
    kwargs: dict[str, object] = field(default_factory=dict)
    # Pretrained weights loaded into the dense network at step 0, so that rewinding to "0" rewinds to them (Chen et
    # al. 2020, "The Lottery Ticket Hypothesis for Pre-trained BERT Networks"): a PyTorch state dict, a safetensors
    # file, or a `save_pretrained` folder. Fresh-init arms still draw the model's own init. The file's content, not
    # its path, is part of the run's identity.
    weights: str | None = None


@dataclass
class DataConfig:
    # mnist1d, mnist, fashion_mnist, cifar10, cifar100, synthetic (`lth.datasets`), imagefolder (class folders of
    # image files, `lth.imagefolder`), or a dataset of your own by import path (`lth.user_dataset`).
    name: str = "mnist1d"
    # Where the standard files live (`lth data download`); for imagefolder, the folder holding train/ and val/ (or
    # test/), or a tar archive of it.
    root: str = "data"
    # Validation examples held out of the training set (None: the dataset's default, 5,000 for MNIST
    # and CIFAR). Early stopping and best-validation numbers never look at the test set (unlike OpenLTH).
    val_size: int | None = None
    batch_size: int = 128  # examples per step, over all data-parallel ranks together
    # The CIFAR augmentation (padded random crop and flip); None: the dataset's default (on for CIFAR). Frankle
    # & Carbin's (2019) Conv-2/4/6 were trained without it, their ResNet-20 and VGG-16 with it.
    augment: bool | None = None
    # imagefolder (`lth.imagefolder`): where the decoded images are cached (None: $XDG_CACHE_HOME/lth or ~/.cache/lth;
    # never under `root`).
    cache: str | None = None
    cache_bytes: int = 4 * 2**30  # imagefolder: the largest decoded dataset served from memory rather than streamed from the files
    image_size: int = 224  # imagefolder: the side of the stream's square crops (ImageNet's 224)
    # The processes that decode images and read a dataset of your own once (None: this process's CPUs; 0: the
    # training process itself).
    workers: int | None = None


@dataclass
class TrainConfig:
    # "adamw": Adam with decoupled weight decay (Loshchilov & Hutter 2019), none on biases, norms' scales and
    # embeddings, as BERT is trained (Devlin et al. 2019) and pruned (Chen et al. 2020).
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1  # the learning rate (the peak, after any warm-up)
    momentum: float = 0.9  # SGD's; Adam's moments keep their defaults
    weight_decay: float = 0.0  # L2 for sgd and adam, decoupled for adamw; pruned weights stay 0 either way
    duration: str = "10ep"  # each level's training: "Nep" epochs or "Nit" steps
    milestones: list[str] = field(default_factory=list)  # steps or epochs ("80ep") at which the LR is multiplied by `gamma`
    gamma: float = 0.1  # the LR's factor at each milestone
    # How often to evaluate the validation split (which picks the early-stopping step) and the test split (read
    # off at that step, never used to choose anything). Frankle & Carbin (2019) evaluate every 100 iterations.
    eval_every: str = "1ep"
    # How often to write last.ckpt, the most work a kill can cost: a multiple of eval_every, or None for
    # every evaluation. It does not change results.
    checkpoint_every: str | None = None
    deterministic: bool = True  # Lightning's deterministic mode; false lets cuDNN autotune (faster on a GPU, not bit-reproducible)
    # Lightning's precision: "32" (the papers' numbers were fp32), or "bf16-mixed": matmuls and convolutions in
    # bfloat16 under autocast, weights, optimizer state and masks in fp32 (pruned weights stay exactly 0).
    precision: str = "32"
    # torch's threads for training; None: `lth.threads` chooses (1 for short steps, else this process's CPUs).
    threads: int | None = None
    # Data-parallel ranks (`lth.distributed`): devices (GPUs, or processes on a CPU) per node, and nodes. The
    # batch stays `data.batch_size` in all, each rank training on its share, so the experiment is the one it is on
    # one device, up to float rounding; world_size is recorded in every results line.
    devices: int = 1  # per node
    num_nodes: int = 1  # the data-parallel ranks are devices × num_nodes
    # A linear learning-rate warm-up from 0 over this long ("5ep"), which large-batch ImageNet schedules need
    # (Goyal et al. 2017, §2.2; OpenLTH's ImageNet ResNet-50: 5 epochs at batch 1024).
    warmup: str = "0"
    # "step": the rate times gamma at each milestone; "cosine": from lr after the warm-up down to 0 at the end of
    # training (Loshchilov & Hutter 2017), the transformers' recipe.
    lr_schedule: Literal["step", "cosine"] = "step"
    # Each run's gradients scaled to at most this global L2 norm before its step (None: not clipped); in a pack, each
    # member's norm is its own.
    clip_grad_norm: float | None = None
    # Label smoothing of the training loss (Szegedy et al. 2016); validation, early stopping and the gap read the
    # plain cross-entropy.
    label_smoothing: float = 0.0


@dataclass
class PruneConfig:
    # "global": one threshold over every layer sharing a fraction (Frankle et al. 2020, §4 for ResNet-20 and VGG-16);
    # "layerwise": each layer ranked alone (Frankle & Carbin 2019, §2).
    strategy: Literal["global", "layerwise"] = "global"
    fraction: float = 0.2  # of the weights still remaining, removed at each level
    # Parameter-name glob -> fraction, first match wins; 0 leaves a layer dense. Frankle & Carbin (2019, §2)
    # prune the output layer at half the rate of the hidden layers.
    layer_fractions: dict[str, float] = field(default_factory=dict)
    dense_layers: list[str] | None = None  # globs never pruned; None: the model's own list
    levels: int = 5  # pruned levels after the dense one (level 0)
    rewind: str = "0"  # "0": the original init; "500it" or "2ep": weights from that point of the dense run
    # The optimizer state every arm that starts at the rewind step k > 0 starts with: "fresh" (OpenLTH's, which
    # produced the published ResNet-20 and VGG-16 numbers: an empty optimizer, the LR schedule fast-forwarded
    # to k) or "restore" (the dense run's momentum or Adam moments at k). One policy for every arm, so that a
    # ticket-vs-control gap at k > 0 is the weights' alone. At k = 0 the two are the same.
    rewind_optimizer: Literal["fresh", "restore"] = "fresh"
    method: str = "magnitude"  # how weights are chosen for removal: a name in `lth.methods`
    schedule: str = "iterative"  # when and from what each level's masks are made: a name in `lth.schedules`
    # The chosen method's and schedule's own settings (their `Params`; None for one without settings), written
    # in YAML under their names: `prune: {method: nm, nm: {n: 2, m: 4}}`.
    method_params: Any = None
    schedule_params: Any = None


@dataclass
class WandbConfig:
    # W&B logs when a project is named here, on the command line or by `wandb agent` (WANDB_PROJECT), unless
    # WANDB_MODE=disabled; WANDB_MODE=offline keeps everything in the run directory for a later `wandb sync`.
    project: str | None = None
    entity: str | None = None  # the W&B team or user (None: the login's default)
    group: str | None = None  # None: the study (name + settings but seed), so its seeds and arms sit together
    tags: list[str] = field(default_factory=list)  # added to every W&B run of the experiment
    log_artifacts: bool = False  # each level's masks and the rewind-point weights, as W&B artifacts


@dataclass
class Experiment:
    name: str = "experiment"  # the study: its runs live in out_dir/name/RUN_ID
    model: ModelConfig = field(default_factory=ModelConfig)  # `model: NAME` is short for `model: {name: NAME}`
    seed: int = 0  # of the init, the data order and every control's randomness; a list ([0, 1, 2]) trains them together
    out_dir: str = "runs"  # where studies are written
    # The ticket and the controls that train on its masks (`lth.arms`), lth's or a plugin's.
    arms: list[str] = field(default_factory=lambda: ["ticket"])
    # How many runs with the same shapes and schedule (seeds, or arms of one level) train in lockstep as one
    # packed network (`lth.models`); null: `lth.packing.auto_pack`. It does not change what a run computes
    # beyond float rounding, so it is not part of the run's identity.
    pack: int | None = None
    # The sweep point the run belongs to (`lth sweep` sets it: the settings that vary across the sweep, as
    # `prune.rewind=500it,prune.fraction=0.2`): its run folders and report live under out_dir/name/point/. Where the
    # run is written, not what it computes: not part of its identity.
    point: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    # Python modules to import before anything else (`lth.plugins`): a user's own arms, methods, schedules and
    # models. Their code, where the experiment uses it, is part of the run's identity (`code`).
    plugins: list[str] = field(default_factory=list)
    # Each registered arm's own settings (its `Params`), by arm name, written in YAML under the arm's name at
    # the top level (`scratch_b: {max_factor: 2}`), whether or not the arm is trained.
    arm_params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The experiment as its YAML spells it (`load` reads it back to an equal experiment)."""
        out = dataclasses.asdict(self)
        prune = out["prune"]
        for key, name in (("method_params", self.prune.method), ("schedule_params", self.prune.schedule)):
            value = prune.pop(key)
            if value is not None:
                prune[name] = value
        out.update(out.pop("arm_params"))
        return out

    def identity(self) -> dict[str, Any]:
        """What determines a run's results. Raising `levels`, adding arms, moving the output or data root or
        changing where it is logged continues the same run rather than starting another. A setting outside
        `ALWAYS_IN_IDENTITY` is left out at its default, so adding a setting (a plugin's too) never renames an
        existing run directory."""
        sections = {f.name: type(getattr(self, f.name))() for f in dataclasses.fields(self) if dataclasses.is_dataclass(getattr(self, f.name))}
        defaults = flatten(Experiment(**sections).to_dict())
        p = self.prune
        plugins = {"prune": {name: _default(params) for name, params in ((p.method, p.method_params), (p.schedule, p.schedule_params)) if params}}
        defaults.update(flatten(plugins | {name: _default(params) for name, params in self.arm_params.items()}))
        identity: dict[str, Any] = {}
        for key, value in flatten(self.to_dict()).items():
            if key.split(".")[0] in NOT_IN_IDENTITY or key in NOT_IN_IDENTITY:
                continue
            if key in ALWAYS_IN_IDENTITY or value != defaults.get(key):
                _set_dotted(identity, key, _ordered(value))
        if code := self.code():
            identity["code"] = code
        if self.model.weights is not None:
            from lth.network import weights_digest

            identity["weights"] = weights_digest(self.model.weights)
        return identity

    def code(self) -> dict[str, str]:
        """The code outside lth that the experiment runs (its model, method, schedule, dataset), by role: a digest of its
        source (`lth.plugins.code_digest`), so that editing a user's model gives another run rather than the old
        results. lth's own code is identified by the names alone, as before."""
        from lth.architecture import resolve
        from lth.datasets import DATASETS
        from lth.methods import METHODS
        from lth.plugins import PluginError, code_digest
        from lth.registry import callable_at
        from lth.schedules import SCHEDULES
        from lth.user_dataset import is_import_path

        used = {"model": resolve(self.model.name), "method": type(METHODS[self.prune.method]), "schedule": type(SCHEDULES[self.prune.schedule])}
        if self.data.name in DATASETS:  # a plugin's dataset: its reader's module (an image folder is identified by its files)
            used["data"] = DATASETS[self.data.name].load
        elif is_import_path(self.data.name):  # a dataset by import path: the callable's module
            try:
                used["data"] = callable_at(self.data.name, "data.name")
            except ValueError as err:
                raise ConfigError(str(err)) from None
        try:
            return {role: code_digest(thing) for role, thing in used.items() if not thing.__module__.startswith("lth.")}
        except PluginError as err:
            raise ConfigError(str(err)) from None

    def run_id(self) -> str:
        return f"{self.model.name}-{self.data.name}-seed{self.seed}-{_digest(self.identity())[:10]}"

    def study_id(self) -> str:
        """The study a run belongs to: its identity but for the seed. Runs of one study pool into error bars. Its name
        says the sweep point too (W&B's group: `lth dashboard` tells a sweep's points apart by it)."""
        identity = self.identity()
        identity.pop("seed")
        return f"{self.name}{f'/{self.point}' if self.point else ''}-{_digest(identity)[:8]}"

    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name / (self.point or "") / self.run_id()


# Never part of a run's identity: where it is written, logged and packed, which arms and how many levels this
# invocation trains, how often it checkpoints, on how many threads and decoding processes, and where data is
# read and cached from (a run moved to a node with a local copy of its data continues).
NOT_IN_IDENTITY = ("out_dir", "arms", "name", "point", "wandb", "pack", "plugins", "model.weights", "prune.levels", "data.root", "data.cache", "data.workers",
                   "train.checkpoint_every", "train.threads", "train.devices", "train.num_nodes")
# The settings that made up every run's identity before settings at their default were left out of it: they
# stay in at any value, so that run directories made before keep their names. Nothing is ever added here.
ALWAYS_IN_IDENTITY = frozenset((
    "seed", "model.name", "model.bn_init", "data.name", "data.val_size", "data.batch_size", "data.augment",
    "train.optimizer", "train.lr", "train.momentum", "train.weight_decay", "train.duration", "train.milestones", "train.gamma",
    "train.eval_every", "train.deterministic", "prune.strategy", "prune.fraction", "prune.layer_fractions", "prune.dense_layers",
    "prune.rewind", "prune.rewind_optimizer", "scratch_b.max_factor",
))

PRECISIONS = ("32", "bf16-mixed")


def _default(params: Any) -> dict[str, Any]:
    return dataclasses.asdict(type(params)())


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of the experiment's settings; a mapping-valued setting (`layer_fractions`) is one value."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "layer_fractions":
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _ordered(value: Any) -> Any:
    """A mapping-valued setting as its order matters: `prune.layer_fractions` takes the first glob that matches, so
    `{'layers.*': 0.1, 'layers.2.weight': 0.5}` and the same keys swapped are two experiments, which the digest's
    sorting of keys would merge. A mapping in sorted order (or of one key) keeps its earlier form, and with it the
    names of run directories made before; any other order becomes its list of [key, value] pairs."""
    if isinstance(value, dict) and list(value) != sorted(value):
        return [[key, item] for key, item in value.items()]
    return value


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check `value` against the annotation `kind`, converting only where YAML is ambiguous."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is list:
        if isinstance(value, str) and args[0] is str:
            value = [value]  # `--arms=reinit`: one sweep value per arm reads naturally
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(kind):
        if isinstance(value, str) and "name" in typing.get_type_hints(kind):
            value = {"name": value}  # `model: resnet20` for `model: {name: resnet20}`
        if isinstance(value, list):  # a plugin's first settings in order: `prune.nm: [2, 4]` for `{n: 2, m: 4}`
            names = [f.name for f in dataclasses.fields(kind)]
            if len(value) > len(names):
                raise ConfigError(f"{key}: expected a mapping of {', '.join(names)}, or a list of at most {len(names)}, got {value!r}")
            value = dict(zip(names, value))
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(kind, value, key + ".")
    if kind is object:  # any YAML value: a user's own builder checks its own arguments
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # `rewind: 0` in YAML
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {kind!r}")


# Lightning Trainer options a researcher may reach for, which lth's own optimizer step (`MaskedModule.training_step`,
# captured as one CUDA graph) would silently ignore: refused, naming what does the job.
IGNORED_TRAINER_OPTIONS = {
    "gradient_clip_val": "use train.clip_grad_norm (clipped inside the step, per run of a pack)",
    "gradient_clip_algorithm": "use train.clip_grad_norm (by global norm)",
    "accumulate_grad_batches": "raise data.batch_size instead (with train.devices to spread it over GPUs)",
}


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    # Settings typed Any hold plugins' own settings, which `from_dict` builds with each plugin's `Params`.
    hints = {k: v for k, v in typing.get_type_hints(cls).items() if Any not in (v, *typing.get_args(v))}
    unknown = sorted(set(values) - set(hints))
    if unknown and (instead := IGNORED_TRAINER_OPTIONS.get(unknown[0])) and cls is TrainConfig:
        raise ConfigError(f"{prefix}{unknown[0]}: lth runs its own optimizer step, where Lightning's {unknown[0]} would do nothing; {instead}")
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(hints))}){_misplaced(prefix + unknown[0], hints, prefix)}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in values.items()})


def _misplaced(key: str, hints: dict[str, Any], prefix: str) -> str:
    """Where a key that is not here may have been meant: a setting of that name in another section (`--levels=3`:
    `prune.levels`), or the closest spelling here, or anywhere."""
    leaf = key.rpartition(".")[2]
    if elsewhere := [k for k in settings() if k.rpartition(".")[2] == leaf]:
        return f"; did you mean {elsewhere[0]!r}?"
    here = suggestion(leaf, hints)
    return here.replace("'", f"'{prefix}", 1) if here else suggestion(key, settings())


def settings() -> dict[str, Any]:
    """Every setting by its dotted key, with its default: the typed configuration's, and the registered plugins' own
    (`prune.nm.n`, `scratch_b.max_factor`). `lth run --help` lists them; `lth.reference` documents them."""
    return {key: (f.default if f.default is not dataclasses.MISSING else f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            for key, (_, f) in setting_fields().items()}


def setting_fields() -> dict[str, tuple[type, dataclasses.Field]]:
    """Every setting by its dotted key, with the dataclass and field that declare it."""
    from lth.arms import ARMS
    from lth.methods import METHODS
    from lth.schedules import SCHEDULES

    out: dict[str, tuple[type, dataclasses.Field]] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if Any in (kind, *typing.get_args(kind)):  # plugins' settings: their own Params, below
                continue
            if dataclasses.is_dataclass(kind):
                walk(kind, f"{prefix}{f.name}.")
            else:
                out[prefix + f.name] = (cls, f)

    walk(Experiment, "")
    for prefix, registry in (("", ARMS), ("prune.", METHODS), ("prune.", SCHEDULES)):
        for name, plugin in registry.items():
            if plugin.Params:
                walk(plugin.Params, f"{prefix}{name}.")
    return out


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = tree.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--{dotted}: {part} is not a section")
        tree = child
    tree[leaf] = value


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`--train.lr=0.05 --arms=[ticket,reinit]`, exactly as `wandb agent` passes `${args}`.

    Values are read as YAML, so numbers, booleans, null and lists keep their types.
    """
    tree: dict[str, Any] = {}
    for arg in args:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"override {arg!r} is not of the form --key=value")
        key, text = arg[2:].split("=", 1)
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            raise ConfigError(f"--{key}: cannot read value {text!r}") from None
        _set_dotted(tree, key, value)
    return tree


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (which it would read as the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults`: the merged keys may be given again, which is what a merge is for
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                where = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice (line {where.line + 1})", where)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load(path: str | Path | None, overrides: list[str] = ()) -> Experiment:
    """Read one experiment, apply overrides, and validate everything that can be checked without data."""
    experiments = load_seeds(path, overrides)
    if len(experiments) != 1:
        raise ConfigError(f"seed: expected one integer here, got {len(experiments)} seeds")
    return experiments[0]


def load_seeds(path: str | Path | None, overrides: list[str] = ()) -> list[Experiment]:
    """As `load`, where `seed` may also be a list (`--seed=[0,1]`): one experiment, and run, per seed."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder; name one of its YAML files")
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeys) or {}
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not UTF-8 text (byte {err.start} is {err.object[err.start]:#04x}); save it as UTF-8") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not values:
            raise ConfigError(f"{path} is empty: an experiment names at least its model and data (see experiments/)")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    values = _merge(values, parse_overrides(list(overrides)))
    _load_plugins(values.get("plugins", []))
    seeds = values.get("seed", Experiment.seed)
    if not isinstance(seeds, list):
        seeds = [seeds]
    elif not seeds or len(set(map(str, seeds))) != len(seeds):
        raise ConfigError(f"seed: expected distinct seeds, got {seeds}")
    experiments = [from_dict({**values, "seed": seed}) for seed in seeds]
    for experiment in experiments:
        validate(experiment)
    return experiments


def _load_plugins(modules: Any) -> None:
    """Before the experiment is read: its plugins define names (arms, methods, schedules, models) it may use."""
    from lth.plugins import PluginError, load

    if isinstance(modules, str):
        modules = [modules]
    if not isinstance(modules, list) or not all(isinstance(m, str) and m for m in modules):
        raise ConfigError(f"plugins: expected a list of module names, got {modules!r}")
    try:
        load(modules)
    except PluginError as err:
        raise ConfigError(str(err)) from None


def from_dict(values: dict[str, Any]) -> Experiment:
    """An experiment from its YAML mapping. Each plugin's settings are built with its own `Params` (an arm's from
    the top-level key of its name, a method's or schedule's from `prune.<name>`); a plugin's settings given
    while another is chosen are refused. The flat spellings of earlier versions are accepted: `prune.<plugin>_<key>`
    (`prune.slimming_l1`) and, for the chosen plugins, `prune.<key>` (`prune.target`, `prune.begin_step`)."""
    from lth.arms import ARMS
    from lth.methods import METHODS
    from lth.schedules import SCHEDULES

    values = dict(values)
    arm_params = {name: _coerce(values.pop(name, {}), arm.Params, name) for name, arm in ARMS.items() if arm.Params}
    prune = values.pop("prune", {})
    if not isinstance(prune, dict):
        raise ConfigError(f"prune: expected a mapping, got {prune!r}")
    prune = dict(prune)
    params = {}
    for kind, registry in (("method", METHODS), ("schedule", SCHEDULES)):
        chosen = prune.get(kind, getattr(PruneConfig, kind))
        if not isinstance(chosen, str) or chosen not in registry:
            raise ConfigError(f"prune.{kind}: unknown {kind} {chosen!r} (known: {', '.join(registry)}){suggestion(chosen, registry)}")
        for name, plugin in registry.items():
            fields = [f.name for f in dataclasses.fields(plugin.Params)] if plugin.Params else []
            flat = {f"{name}_{f}": f for f in fields} | ({f: f for f in fields} if name == chosen else {})
            given = [key for key in (name, *flat) if key in prune]
            if not given:
                continue
            if name != chosen:
                raise ConfigError(f"prune.{given[0]}: only the {kind} {name} uses it, not {chosen}")
            if plugin.Params is None:
                raise ConfigError(f"prune.{name}: the {kind} {name} has no settings")
            section = _coerce(prune.pop(name, {}), plugin.Params, f"prune.{name}")
            for key in (k for k in given if k != name):  # flat spellings, over the section's values
                setattr(section, flat[key], _coerce(prune.pop(key), typing.get_type_hints(plugin.Params)[flat[key]], f"prune.{key}"))
            params[kind] = section
        params.setdefault(kind, registry[chosen].Params() if registry[chosen].Params else None)
        for key in set(prune) - set(typing.get_type_hints(PruneConfig)):
            if owners := [name for name, plugin in registry.items() if plugin.Params and key in {f.name for f in dataclasses.fields(plugin.Params)}]:
                users = owners[0] if len(owners) == 1 else f"{', '.join(owners[:-1])} or {owners[-1]}"
                raise ConfigError(f"prune.{key}: only the {kind} {users} uses it, not {chosen}")
    experiment = _build(Experiment, values)
    experiment.prune = _build(PruneConfig, prune, "prune.")
    experiment.prune.method_params, experiment.prune.schedule_params = params["method"], params["schedule"]
    experiment.arm_params = arm_params
    return experiment


def validate(cfg: Experiment) -> None:
    # Imported here: the registries import torch, which the config parser itself does not need.
    from lth import pruning
    from lth.architecture import ModelError, resolve
    from lth.arms import ARMS
    from lth.data import names
    from lth.network import Network
    from lth.user_dataset import is_import_path

    try:
        resolve(cfg.model.name)
    except ModelError as err:
        raise ConfigError(str(err)) from None
    if cfg.data.name not in names() and not is_import_path(cfg.data.name):
        raise ConfigError(f"data.name: unknown dataset {cfg.data.name!r} (known: {', '.join(names())}; or package.module:callable for your own)"
                          f"{suggestion(cfg.data.name, names())}")
    bad_arms = [a for a in cfg.arms if a not in ARMS]
    if bad_arms or not cfg.arms:
        raise ConfigError(f"arms: unknown arm {bad_arms[0] if bad_arms else '(none)'} (known: {', '.join(ARMS)})"
                          f"{suggestion(bad_arms[0], ARMS) if bad_arms else ''}")
    if twice := sorted({a for a in cfg.arms if cfg.arms.count(a) > 1}):
        raise ConfigError(f"arms: {twice[0]} is listed twice")
    name = Path(cfg.name)
    if not cfg.name or name.is_absolute() or ".." in name.parts:
        raise ConfigError(f"name: {cfg.name!r} must be a folder name inside out_dir (relative, without '..')")
    if cfg.point is not None and (not cfg.point or Path(cfg.point).name != cfg.point or cfg.point in (".", "..", "report")):
        raise ConfigError(f"point: {cfg.point!r} must be one folder name (no '/'; not '.', '..' or 'report')")
    if not 0 <= cfg.seed < 2**63:
        raise ConfigError(f"seed: must lie in [0, 2**63), got {cfg.seed}")
    _writable(cfg.run_dir())  # a new run, or one to extend or repeat
    p = cfg.prune
    if not 0.0 < p.fraction < 1.0:
        raise ConfigError(f"prune.fraction: must lie in (0, 1), got {p.fraction}")
    for pattern, fraction in p.layer_fractions.items():
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(f"prune.layer_fractions.{pattern}: must lie in [0, 1), got {fraction}")
    if p.levels < 0:
        raise ConfigError(f"prune.levels: must be 0 or more, got {p.levels}")
    for key in ("devices", "num_nodes"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"train.{key}: must be at least 1, got {getattr(cfg.train, key)}")
    ranks = cfg.train.devices * cfg.train.num_nodes
    if cfg.data.batch_size % ranks:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} is the batch of all {ranks} ranks together (train.devices × train.num_nodes) "
                          f"and must divide among them; choose a multiple of {ranks}")
    if cfg.train.threads is not None and cfg.train.threads < 1:
        raise ConfigError(f"train.threads: must be at least 1 or null, got {cfg.train.threads}")
    if cfg.pack is not None and cfg.pack < 1:
        raise ConfigError(f"pack: must be at least 1 or null, got {cfg.pack}")
    if cfg.data.batch_size < 1:
        raise ConfigError(f"data.batch_size: must be at least 1, got {cfg.data.batch_size}")
    for key, least in (("cache_bytes", 0), ("image_size", 8), ("workers", 0)):
        if (value := getattr(cfg.data, key)) is not None and value < least:
            raise ConfigError(f"data.{key}: must be at least {least}, got {value}")
    for key in ("lr", "gamma"):
        if getattr(cfg.train, key) <= 0:
            raise ConfigError(f"train.{key}: must be positive, got {getattr(cfg.train, key)}")
    if not 0 <= cfg.train.label_smoothing < 1:
        raise ConfigError(f"train.label_smoothing: must lie in [0, 1), got {cfg.train.label_smoothing}")
    if cfg.train.clip_grad_norm is not None and cfg.train.clip_grad_norm <= 0:
        raise ConfigError(f"train.clip_grad_norm: must be positive or null, got {cfg.train.clip_grad_norm}")
    if cfg.train.lr_schedule == "cosine" and cfg.train.milestones:
        raise ConfigError("train.milestones: the cosine schedule has none; give one or the other")
    for key in ("momentum", "weight_decay"):
        if getattr(cfg.train, key) < 0:
            raise ConfigError(f"train.{key}: must be 0 or more, got {getattr(cfg.train, key)}")
    if cfg.train.precision not in PRECISIONS:
        raise ConfigError(f"train.precision: one of {', '.join(PRECISIONS)}, got {cfg.train.precision!r}")
    for name, params in cfg.arm_params.items():
        if problem := ARMS[name].check(params):
            raise ConfigError(problem)
    if (moving := [a for a in cfg.arms if ARMS[a].moves_masks]) and pruning.method(p).unit(p.method_params, dict).removes_channels:
        raise ConfigError(f"arms: {moving[0]} moves single connections as it trains; prune.method {p.method} removes whole channels, "
                          "whose narrow network it cannot grow back: use it with a method that prunes weights")
    if problem := pruning.schedule(p).check(p.schedule_params, p, steps(cfg)):
        raise ConfigError(problem)
    spec = dataset(cfg.data)
    if cfg.data.augment and (spec.records or len(spec.input_shape) != 3):
        raise ConfigError(f"data.augment: the augmentation crops and flips images [C, H, W]; {cfg.data.name}'s inputs are not those")
    if problem := Network(cfg.model, p, spec).problem(cfg.pack, ranks):
        raise ConfigError(problem)


def _writable(run_dir: Path) -> None:
    """A run directory, or the nearest of its parents that exists, is a directory this process may write in."""
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists() or p == Path(p.anchor or "."))
    if not existing.is_dir():
        raise ConfigError(f"out_dir: {existing} is a file, not a directory (the run would be {run_dir})")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"out_dir: {existing} is not writable by this user")


def steps(cfg: Experiment) -> Steps:
    """The run's durations in optimizer steps, checked."""
    spec = dataset(cfg.data)
    val_size = spec.default_val_size if cfg.data.val_size is None else cfg.data.val_size
    if spec.fixed_val and val_size != spec.default_val_size:
        raise ConfigError(f"data.val_size: {cfg.data.name} gives its own validation split of {spec.default_val_size} examples; leave data.val_size unset")
    if not 0 < val_size < spec.train_size:
        raise ConfigError(f"data.val_size: must lie in (0, {spec.train_size}), got {val_size}")
    train_size = spec.train_size - val_size
    spe = train_size // cfg.data.batch_size
    if spe < 1:
        raise ConfigError(f"data.batch_size: {cfg.data.batch_size} exceeds the {train_size} training examples")
    total = to_steps(cfg.train.duration, spe, "train.duration")
    if total < 1:
        raise ConfigError("train.duration: must be at least one step")
    rewind = to_steps(cfg.prune.rewind, spe, "prune.rewind")
    if rewind >= total:
        raise ConfigError(
            f"prune.rewind: {cfg.prune.rewind} ({rewind} steps) is not before the end of training ({total} steps)"
        )
    milestones = tuple(to_steps(m, spe, f"train.milestones[{i}]") for i, m in enumerate(cfg.train.milestones))
    for i, step in enumerate(milestones):
        if not 0 < step < total:
            raise ConfigError(f"train.milestones[{i}]: {cfg.train.milestones[i]} lies outside training ({total} steps)")
    eval_every = to_steps(cfg.train.eval_every, spe, "train.eval_every")
    if eval_every < 1:
        raise ConfigError("train.eval_every: must be at least one step")
    checkpoint_every = eval_every
    if cfg.train.checkpoint_every is not None:
        checkpoint_every = to_steps(cfg.train.checkpoint_every, spe, "train.checkpoint_every")
        if checkpoint_every < 1 or checkpoint_every % eval_every:
            raise ConfigError(
                f"train.checkpoint_every: {cfg.train.checkpoint_every} ({checkpoint_every} steps) is not a multiple of "
                f"train.eval_every ({eval_every} steps); checkpoints are written right after evaluations"
            )
    warmup = to_steps(cfg.train.warmup, spe, "train.warmup")
    if warmup >= total:
        raise ConfigError(f"train.warmup: {cfg.train.warmup} ({warmup} steps) is not before the end of training ({total} steps)")
    return Steps(spe, total, rewind, milestones, eval_every, checkpoint_every, val_size, warmup)


def dataset(data: DataConfig):
    """The dataset's shape and sizes (`lth.data.dataset`); an image folder is listed (not decoded) to learn them."""
    from lth.data import MissingDataError, dataset

    try:
        return dataset(data)
    except MissingDataError as err:
        raise ConfigError(str(err)) from None

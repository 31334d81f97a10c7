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
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


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
    name: str = "mnist1d_mlp"
    # Batch-norm scales at initialisation: "ones" (PyTorch's default) or "uniform" in [0, 1], as OpenLTH
    # initialises its CIFAR ResNets and VGGs (models/bn_initializers.py, `batchnorm_init='uniform'` in their
    # default hparams), which produced Frankle et al.'s (2020) ResNet-20 and VGG-16 numbers.
    bn_init: Literal["ones", "uniform"] = "ones"


@dataclass
class DataConfig:
    name: str = "mnist1d"
    root: str = "data"
    # Validation examples held out of the training set (None: the dataset's default, 5,000 for MNIST
    # and CIFAR). Early stopping and best-validation numbers never look at the test set (unlike OpenLTH).
    val_size: int | None = None
    batch_size: int = 128
    # The CIFAR augmentation (padded random crop and flip); None: the dataset's default (on for CIFAR). Frankle
    # & Carbin's (2019) Conv-2/4/6 were trained without it, their ResNet-20 and VGG-16 with it.
    augment: bool | None = None


@dataclass
class TrainConfig:
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    duration: str = "10ep"
    milestones: list[str] = field(default_factory=list)  # the LR is multiplied by `gamma` at each
    gamma: float = 0.1
    # How often to evaluate the validation split (which picks the early-stopping step) and the test split (read
    # off at that step, never used to choose anything). Frankle & Carbin (2019) evaluate every 100 iterations.
    eval_every: str = "1ep"
    # How often to write last.ckpt, the most work a kill can cost: a multiple of eval_every, or None for
    # every evaluation. It does not change results.
    checkpoint_every: str | None = None
    deterministic: bool = True
    # Lightning's precision: "32" (the papers' numbers were fp32), or "bf16-mixed": matmuls and convolutions in
    # bfloat16 under autocast, weights, optimizer state and masks in fp32 (pruned weights stay exactly 0).
    precision: str = "32"


@dataclass
class PruneConfig:
    strategy: Literal["global", "layerwise"] = "global"
    fraction: float = 0.2  # of the weights still remaining, removed at each level
    # Parameter-name glob -> fraction, first match wins; 0 leaves a layer dense. Frankle & Carbin (2019, §2)
    # prune the output layer at half the rate of the hidden layers.
    layer_fractions: dict[str, float] = field(default_factory=dict)
    dense_layers: list[str] | None = None  # globs never pruned; None: the model's own list
    levels: int = 5
    rewind: str = "0"  # "0": the original init; "500it" or "2ep": weights from that point of the dense run
    # The optimizer state every arm that starts at the rewind step k > 0 starts with: "fresh" (OpenLTH's, which
    # produced the published ResNet-20 and VGG-16 numbers: an empty optimizer, the LR schedule fast-forwarded
    # to k) or "restore" (the dense run's momentum or Adam moments at k). One policy for every arm, so that a
    # ticket-vs-control gap at k > 0 is the weights' alone. At k = 0 the two are the same.
    rewind_optimizer: Literal["fresh", "restore"] = "fresh"
    method: str = "magnitude"  # how weights are chosen for removal: a name in `lth.methods`
    schedule: str = "iterative"  # when and from what each level's masks are made: a name in `lth.schedules`
    target: float | None = None  # schedule oneshot: the fraction of weights to keep, in (0, 1)
    nm: list[int] | None = None  # method nm: [N, M], N kept in every M consecutive weights along the input (2:4)
    slimming_l1: float | None = None  # method slimming: λ of the L1 penalty on batch-norm scales (1e-4 in Liu et al. 2017, §4.3)
    # schedule gradual (Zhu & Gupta 2017): prune from begin_step to end_step, every `frequency` steps
    begin_step: int | None = None
    end_step: int | None = None
    frequency: int | None = None


@dataclass
class ScratchBConfig:
    # Scratch-B trains for the dense run's compute: epochs × dense MACs / pruned MACs, at most `max_factor`
    # times as long (Liu et al. 2019 cap it at 2 in their ImageNet code; null removes the cap, as in their
    # CIFAR code).
    max_factor: float | None = 2.0


@dataclass
class WandbConfig:
    # W&B logs when a project is named here, on the command line or by `wandb agent` (WANDB_PROJECT), unless
    # WANDB_MODE=disabled; WANDB_MODE=offline keeps everything in the run directory for a later `wandb sync`.
    project: str | None = None
    entity: str | None = None
    group: str | None = None  # None: the study (name + settings but seed), so its seeds and arms sit together
    tags: list[str] = field(default_factory=list)
    log_artifacts: bool = False  # each level's masks and the rewind-point weights, as W&B artifacts


@dataclass
class Experiment:
    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)  # `model: NAME` is short for `model: {name: NAME}`
    seed: int = 0
    out_dir: str = "runs"
    arms: list[str] = field(default_factory=lambda: ["ticket"])
    # How many runs with the same shapes and schedule (seeds, or arms of one level) train in lockstep as one
    # packed network (`lth.models`); null: `lth.packing.auto_pack`. It does not change what a run computes
    # beyond float rounding, so it is not part of the run's identity.
    pack: int | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    scratch_b: ScratchBConfig = field(default_factory=ScratchBConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """What determines a run's results. Raising `levels`, adding arms, moving the output or data root or
        changing where it is logged continues the same run rather than starting another."""
        identity = self.to_dict()
        for key in ("out_dir", "arms", "name", "wandb", "pack"):
            identity.pop(key)
        identity["prune"].pop("levels")
        identity["data"].pop("root")
        identity["train"].pop("checkpoint_every")
        for section, key, value in IDENTICAL_TO_EARLIER_RUNS:
            if identity[section][key] == value:
                identity[section].pop(key)
        return identity

    def run_id(self) -> str:
        return f"{self.model.name}-{self.data.name}-seed{self.seed}-{_digest(self.identity())[:10]}"

    def study_id(self) -> str:
        """The study a run belongs to: its identity but for the seed. Runs of one study pool into error bars."""
        identity = self.identity()
        identity.pop("seed")
        return f"{self.name}-{_digest(identity)[:8]}"

    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name / self.run_id()


# Settings added after run directories already existed, with the value that computes what those runs computed:
# at that value a setting stays out of the identity, so runs made before it existed keep their directory and
# continue (Raising `levels` after an upgrade extends a run instead of starting it again.)
PRECISIONS = ("32", "bf16-mixed")

IDENTICAL_TO_EARLIER_RUNS = (
    ("prune", "method", "magnitude"), ("prune", "schedule", "iterative"), ("prune", "target", None), ("prune", "nm", None), ("prune", "slimming_l1", None),
    ("train", "precision", "32"), ("prune", "begin_step", None), ("prune", "end_step", None), ("prune", "frequency", None),
)


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
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(kind, value, key + ".")
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


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]} (known: {', '.join(sorted(hints))})")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in values.items()})


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
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    values = _merge(values, parse_overrides(list(overrides)))
    seeds = values.get("seed", Experiment.seed)
    if not isinstance(seeds, list):
        seeds = [seeds]
    elif not seeds or len(set(map(str, seeds))) != len(seeds):
        raise ConfigError(f"seed: expected distinct seeds, got {seeds}")
    experiments = [_build(Experiment, {**values, "seed": seed}) for seed in seeds]
    for experiment in experiments:
        validate(experiment)
    return experiments


def validate(cfg: Experiment) -> None:
    # Imported here: the registries import torch, which the config parser itself does not need.
    import torch

    from lth.arms import ARMS
    from lth.data import DATASETS
    from lth.methods import METHODS, structure
    from lth.models import MODELS, prunable_names
    from lth.schedules import SCHEDULES, layer_fractions

    if cfg.model.name not in MODELS:
        raise ConfigError(f"model.name: unknown model {cfg.model.name!r} (known: {', '.join(sorted(MODELS))})")
    if cfg.data.name not in DATASETS:
        raise ConfigError(f"data.name: unknown dataset {cfg.data.name!r} (known: {', '.join(sorted(DATASETS))})")
    bad_arms = [a for a in cfg.arms if a not in ARMS]
    if bad_arms or not cfg.arms:
        raise ConfigError(f"arms: unknown arm {bad_arms[0] if bad_arms else '(none)'} (known: {', '.join(ARMS)})")
    p = cfg.prune
    for key, value, registry in (("method", p.method, METHODS), ("schedule", p.schedule, SCHEDULES)):
        if value not in registry:
            raise ConfigError(f"prune.{key}: unknown {key} {value!r} (known: {', '.join(registry)})")
    if not 0.0 < p.fraction < 1.0:
        raise ConfigError(f"prune.fraction: must lie in (0, 1), got {p.fraction}")
    for pattern, fraction in p.layer_fractions.items():
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(f"prune.layer_fractions.{pattern}: must lie in [0, 1), got {fraction}")
    if p.levels < 0:
        raise ConfigError(f"prune.levels: must be 0 or more, got {p.levels}")
    if cfg.pack is not None and cfg.pack < 1:
        raise ConfigError(f"pack: must be at least 1 or null, got {cfg.pack}")
    if cfg.data.batch_size < 1:
        raise ConfigError(f"data.batch_size: must be at least 1, got {cfg.data.batch_size}")
    if cfg.scratch_b.max_factor is not None and cfg.scratch_b.max_factor < 1:
        raise ConfigError(f"scratch_b.max_factor: must be at least 1 or null, got {cfg.scratch_b.max_factor}")
    if cfg.train.lr <= 0:
        raise ConfigError(f"train.lr: must be positive, got {cfg.train.lr}")
    if cfg.train.precision not in PRECISIONS:
        raise ConfigError(f"train.precision: one of {', '.join(PRECISIONS)}, got {cfg.train.precision!r}")
    if problem := SCHEDULES[p.schedule].check(p, Schedule.of(cfg)):
        raise ConfigError(problem)
    if p.nm is not None and p.method != "nm":
        raise ConfigError(f"prune.nm: only the method nm uses it, not {p.method}")
    if p.slimming_l1 is not None and p.method != "slimming":
        raise ConfigError(f"prune.slimming_l1: only the method slimming uses it, not {p.method}")
    spec = DATASETS[cfg.data.name]
    with torch.device("meta"):  # shapes alone, no memory and no init
        model = MODELS[cfg.model.name](spec.input_shape, spec.num_classes)
    names = prunable_names(model)
    shapes = {n: tuple(model.get_parameter(n).shape) for n in names}
    if problem := METHODS[p.method].check(p, shapes, layer_fractions(p, model, names), structure(p, cfg.model.name, spec)):
        raise ConfigError(problem)


@dataclass(frozen=True)
class Schedule:
    """The run's durations in optimizer steps; one step is one batch (the last partial batch of an
    epoch is dropped, so every epoch has the same number of steps)."""

    steps_per_epoch: int
    total_steps: int
    rewind_step: int
    milestone_steps: tuple[int, ...]
    eval_every: int
    checkpoint_every: int
    val_size: int

    @classmethod
    def of(cls, cfg: Experiment) -> Schedule:
        from lth.data import DATASETS

        spec = DATASETS[cfg.data.name]
        val_size = spec.default_val_size if cfg.data.val_size is None else cfg.data.val_size
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
        return cls(spe, total, rewind, milestones, eval_every, checkpoint_every, val_size)

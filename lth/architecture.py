"""What builds a network by name for a dataset's shapes: a model registered in `lth.models` (lth's own, or a
plugin's), any `nn.Module` by import path (`package.module:Callable`), or a Hugging Face transformer (`lth.hf`)."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from lth import hf
from lth.inputs import Shape
from lth.models import MODELS
from lth.registry import callable_at, suggestion


class ModelError(ValueError):
    """A model that cannot be found or built as named: one line for the user."""


@dataclass(frozen=True)
class Architecture:
    """The experiment's network for its dataset's shapes: a registered model (`MODELS`), or any `nn.Module` named by
    import path, `package.module:Callable` (a class or a factory), called with `kwargs` and with `input_shape` and
    `num_classes` where its signature takes them. Everything that builds the experiment's network builds it here."""

    name: str
    input_shape: Shape  # of one example (`lth.inputs`)
    num_classes: int
    kwargs: tuple[tuple[str, Any], ...] = ()

    def __hash__(self) -> int:  # its kwargs may hold lists; the caches of traced structure key on it
        return hash(json.dumps([self.name, self.input_shape, self.num_classes, self.kwargs], sort_keys=True, default=str))

    @classmethod
    def of(cls, model, spec) -> Architecture:
        """For a `ModelConfig` and a dataset's `Spec`."""
        return cls(model.name, spec.input_shape, spec.num_classes, tuple(model.kwargs.items()))

    @property
    def builder(self) -> Callable[..., nn.Module]:
        return resolve(self.name)

    @property
    def packs(self) -> bool:
        """Whether it is written in lth's packing convention (its builder takes `pack`): otherwise each run trains alone."""
        return "pack" in _parameters(self.builder)

    def build(self, pack: int = 1) -> nn.Module:
        if hf.is_transformer(self.builder):
            return hf.build(self.builder, dict(self.kwargs), self.input_shape, self.num_classes)
        accepts, named = _parameters(self.builder), dict(self.kwargs)
        for key, value in (("input_shape", self.input_shape), ("num_classes", self.num_classes)) + ((("pack", pack),) if pack > 1 else ()):
            if key in accepts or "**" in accepts:
                named[key] = value
        if self.name in MODELS:  # lth's own builders take the shapes by position
            return self.builder(self.input_shape, self.num_classes, **{k: v for k, v in named.items() if k not in ("input_shape", "num_classes")})
        return self.builder(**named)


def resolve(name: str) -> Callable[..., nn.Module]:
    """The builder `name` stands for: a registered model, or `package.module:Callable` imported by path."""
    if name in MODELS:
        return MODELS[name]
    if ":" not in name:
        raise ModelError(f"model.name: unknown model {name!r} (known: {', '.join(sorted(MODELS))}; or package.module:Callable for your own)"
                         f"{suggestion(name, MODELS)}")
    try:
        return callable_at(name, "model.name")
    except ValueError as err:
        raise ModelError(str(err)) from None


def _parameters(builder: Callable) -> set[str]:
    """The keyword arguments a builder takes; `**` if it takes any."""
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):
        return set()
    return {"**" if p.kind is p.VAR_KEYWORD else p.name for p in signature.parameters.values()}

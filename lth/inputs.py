"""What a network is fed: one tensor [B, ...] (images, vectors, signals), or, for a dataset whose examples are dicts
of tensors (a tokenised text's `input_ids` and `attention_mask`), a dict of [B, ...] tensors, passed to the model as
keyword arguments, as Hugging Face models take them. Everything that runs a network on data runs it through `call`,
and everything that needs inputs without data (counting MACs, SynFlow's all-ones input, tracing, the export's
check) makes them with `filled` or `drawn` from the dataset's input shape (`Shape`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import nn

Inputs = Union[torch.Tensor, dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Fields:
    """The input shape of a dataset of dict examples: each key's shape and dtype in its first training example,
    collated alone. A sequence's length varies from batch to batch (padded to the batch's longest); where one length
    is needed (the MACs per example in a results line) it is that first example's."""

    fields: tuple[tuple[str, tuple[int, ...], str], ...]  # (key, shape of one example, dtype name), sorted by key

    @classmethod
    def of(cls, batch: Mapping[str, torch.Tensor]) -> Fields:
        """Of a collated batch of one example."""
        return cls(tuple((key, tuple(batch[key].shape[1:]), str(batch[key].dtype).removeprefix("torch.")) for key in sorted(batch)))

    def listed(self) -> list[list[Any]]:
        """As plain lists, for files that hold no classes (an exported network, read with `weights_only`)."""
        return [[key, list(shape), dtype] for key, shape, dtype in self.fields]


Shape = Union[tuple[int, ...], Fields]


def shape_of(value: Any) -> Shape:
    """A `Shape` from its listed form (`Fields.listed`) or a tuple or list of ints."""
    if value and isinstance(value[0], (list, tuple)):
        return Fields(tuple((key, tuple(shape), dtype) for key, shape, dtype in value))
    return tuple(value)


def call(model: nn.Module, x: Inputs) -> Any:
    return model(**x) if isinstance(x, Mapping) else model(x)


def size(x: Inputs) -> int:
    """The batch size."""
    return len(next(iter(x.values()))) if isinstance(x, Mapping) else len(x)


def side_by_side(x: Inputs, k: int) -> Inputs:
    """The inputs each of k packed networks sees, laid out as a packed model takes them: K copies side by side in the
    channel dimension. Dict inputs only ever feed one network (`lth.network.Network.pack`)."""
    if k == 1:
        return x
    return x.repeat(1, k, *[1] * (x.dim() - 2))


def filled(shape: Shape, n: int, value: float, dtype: torch.dtype | None = None) -> Inputs:
    """n examples, every entry `value`: in `dtype` (torch's default float dtype if None); a dict input's integer
    fields (token ids, masks) stay integers."""
    if isinstance(shape, Fields):
        return {key: torch.full((n, *s), value, dtype=_field_dtype(name, dtype)) for key, s, name in shape.fields}
    return torch.full((n, *shape), value, dtype=dtype or torch.get_default_dtype())


def drawn(shape: Shape, n: int, generator: torch.Generator) -> Inputs:
    """n seeded random examples: normal floats; a dict input's integer fields 0 or 1 (a valid token id and mask
    value for any vocabulary)."""
    if isinstance(shape, Fields):
        return {key: torch.randint(0, 2, (n, *s), generator=generator, dtype=getattr(torch, name)) if not getattr(torch, name).is_floating_point
                else torch.randn(n, *s, generator=generator) for key, s, name in shape.fields}
    return torch.randn(n, *shape, generator=generator)


def _field_dtype(name: str, dtype: torch.dtype | None) -> torch.dtype:
    own = getattr(torch, name)
    return own if not own.is_floating_point else dtype or torch.get_default_dtype()

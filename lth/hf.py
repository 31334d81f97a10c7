"""Hugging Face `transformers` models, named by import path like any other (`model: transformers:ViTForImageClassification`)
and built from a config: `model.kwargs` are the config's fields (`hidden_size`, `num_hidden_layers`, ...), the
dataset gives the class count and, for vision models, the channels and image size. Nothing is downloaded; start
from pretrained weights with `model.weights` (a folder written by `save_pretrained`, or its safetensors file).

Which layers prune by default follows Chen et al. (2020), "The Lottery Ticket Hypothesis for Pre-trained BERT
Networks", §3 and their code (VITA-Group/BERT-Tickets, `pruning_model`): the Linear layers of the encoder (query,
key, value, attention output, intermediate, output) and the pooler. The embeddings (a ViT's patch projection
among them) and the task's classification head stay dense; layer norms and biases are never pruned by lth.
`prune.dense_layers` overrides the default, as for any model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lth.inputs import Shape


def is_transformer(builder: Any) -> bool:
    """Whether `builder` is a `transformers` model class (checked by its bases' names: transformers stays unimported
    for everyone else)."""
    return isinstance(builder, type) and any(base.__name__ == "PreTrainedModel" for base in builder.__mro__)


def build(builder: type, kwargs: dict[str, Any], input_shape: Shape, num_classes: int) -> nn.Module:
    """The model of `builder`'s own config class with `kwargs`, sized for the dataset: its class count, and, where the
    config has them (vision models), the images' channels and height × width."""
    config = builder.config_class(**kwargs)
    config.num_labels = num_classes
    if isinstance(input_shape, tuple) and len(input_shape) == 3 and hasattr(config, "num_channels") and hasattr(config, "image_size"):
        config.num_channels, config.image_size = input_shape[0], tuple(input_shape[1:])
    return builder(config)


def dense_layers(model: nn.Module, prunable: list[str]) -> tuple[str, ...]:
    """The prunable weights Chen et al. (2020) leave dense: those outside the base model (the task's head) and its
    embeddings."""
    inside = f"{model.base_model_prefix}."
    return tuple(name for name in prunable if not name.startswith(inside) or ".embeddings." in name)

"""Model registry: `MODELS[name](input_shape, num_classes, pack=1) -> nn.Module`.

Every model may name `dense_layers`, parameter-name globs that pruning leaves alone by default.
Prunable parameters are the weights of Linear and Conv layers; biases and normalisation layers never
are (Frankle & Carbin 2019, §2; Frankle et al. 2020, Appendix A).

`pack=K` builds K independent copies of the network as one: every conv is grouped (`groups=K`), every
linear layer a batch of K matrices, every batch norm K× as wide. Inputs and activations carry the K copies
side by side in the channel dimension ([B, K·C, ...]), and every parameter and buffer is the K copies'
tensors concatenated along dim 0, so packing K trained runs is `torch.cat` of their state dicts
(`lth.packing`). The same class with `pack=1` is the ordinary network; there is one definition of each.
A small network leaves a GPU idle between kernel launches; K copies per launch fill it.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from lth import hf

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Register a builder under `name`, as lth's own models are and as a plugin's may be (`lth.plugins`)."""

    def add(builder):
        if MODELS.get(name, builder) is not builder:
            raise ValueError(f"the model name {name!r} is taken (by {MODELS[name].__module__})")
        MODELS[name] = builder
        return builder

    return add


def logits(output: Any) -> torch.Tensor:
    """A network's logits from what its forward returns: a tensor, or, as Hugging Face models and many users' modules
    return them, an output with `.logits` (`ModelOutput`), a mapping with "logits", or a tuple whose first item they are."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise ValueError(f"the model returned a {type(output).__name__}, with no logits lth can find (a tensor, .logits, ['logits'] or a tuple's first item)")


def dense_layers(model: nn.Module) -> tuple[str, ...]:
    """The globs a model leaves dense by default: its own `dense_layers`, a transformer's embeddings and head
    (`lth.hf`), none for a plain module."""
    if hf.is_transformer(type(model)):
        return hf.dense_layers(model, prunable_names(model))
    return tuple(getattr(model, "dense_layers", ()))


def initialise(model: nn.Module) -> None:
    """Draw a network's weights afresh as its own code does (`PackedNetwork.initialise`; a plain module's layers' defaults)."""
    if isinstance(model, PackedNetwork):
        model.initialise()
    else:
        reset_layers(model)


def reset_layers(model: nn.Module) -> None:
    """PyTorch's default init of every layer below `model`, as the layers draw it when they are made."""
    for module in model.modules():
        if module is not model and hasattr(module, "reset_parameters"):
            module.reset_parameters()


def prunable_names(model: nn.Module) -> list[str]:
    return [
        f"{module_name}.weight" if module_name else "weight"
        for module_name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))
    ]


class Linear(nn.Linear):
    """`pack` independent linear maps in_features -> out_features: weight [pack·out, in], input [B, pack·in]."""

    def __init__(self, in_features: int, out_features: int, pack: int = 1, bias: bool = True):
        super().__init__(in_features, out_features * pack, bias)
        self.pack = pack

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pack == 1:
            return super().forward(x)
        w = self.weight.view(self.pack, -1, self.in_features)
        y = torch.einsum("bki,koi->bko", x.view(len(x), self.pack, self.in_features), w).flatten(1)
        return y if self.bias is None else y + self.bias


def conv2d(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, pack: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin * pack, cout * pack, kernel, stride, padding, groups=pack, bias=bias)


class PackedNetwork(nn.Module):
    # Parameter-name globs that pruning leaves dense unless the experiment says otherwise.
    dense_layers: tuple[str, ...] = ()

    def initialise(self) -> None:
        """Draw the weights as the network's source does. Builders call it (PyTorch's layer defaults are drawn
        as the layers are made); `lth.channels.narrow`'s networks call it again, so that a network trained
        from scratch at narrower widths has the init of those widths (Liu et al. 2019, §4: "randomly
        initialized"), not a wide init's slices."""
        reset_layers(self)


def glorot_init(model: nn.Module) -> None:
    """Glorot-normal weights and zero biases, as in Frankle & Carbin (2019), Figure 2."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.xavier_normal_(module.weight)
            nn.init.zeros_(module.bias)


def kaiming_init(model: nn.Module) -> None:
    """OpenLTH's initialisation of weights for the CIFAR networks: He-normal weights, zero biases; batch-norm
    scales start at 1 here, and `init_batch_norm` draws them as OpenLTH does when `model.bn_init` says so."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight)  # fan_in is per copy, so packed copies get the same scale
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def init_batch_norm(model: nn.Module, how: str) -> None:
    """`uniform`: batch-norm scales drawn from U[0, 1], OpenLTH's `batchnorm_init='uniform'` for its CIFAR
    ResNets and VGGs (Frankle et al. 2020); `ones`: left at PyTorch's 1. Drawn after the weights, from the
    same seeded generator, so the weights of a run do not depend on this choice."""
    if how == "uniform":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                nn.init.uniform_(module.weight)


class MLP(PackedNetwork):
    def __init__(self, input_shape: tuple[int, ...], hidden: list[int], num_classes: int, pack: int = 1):
        super().__init__()
        widths = [math.prod(input_shape), *hidden, num_classes]
        self.layers = nn.ModuleList(Linear(a, b, pack) for a, b in zip(widths, widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


class LeNet(MLP):
    """Frankle & Carbin (2019), Figure 2: 784-300-100-10, 266,610 parameters on MNIST, Glorot-normal init."""

    initialise = glorot_init


@register("lenet_300_100")
def lenet_300_100(input_shape, num_classes, pack=1):
    model = LeNet(input_shape, [300, 100], num_classes, pack)
    model.initialise()
    return model


@register("mnist1d_mlp")
def mnist1d_mlp(input_shape, num_classes, pack=1):
    """The MLP of the MNIST-1D paper (Greydanus 2020): two hidden layers of 100."""
    return MLP(input_shape, [100, 100], num_classes, pack)


class ConvNet(PackedNetwork):
    """Frankle & Carbin's Conv-2/4/6 (Figure 2): 3×3 convs in pairs, each pair followed by 2×2 max-pooling,
    then fully-connected 256-256-classes, Glorot-normal init."""

    initialise = glorot_init

    def __init__(self, input_shape, num_classes, widths: list[int], pack: int = 1):
        super().__init__()
        channels, height, width = input_shape
        convs = []
        for w in widths:
            convs.append(conv2d(channels, w, 3, padding=1, pack=pack))
            channels = w
        self.convs = nn.ModuleList(convs)
        pools = len(widths) // 2
        features = channels * (height >> pools) * (width >> pools)
        self.fcs = nn.ModuleList([Linear(features, 256, pack), Linear(256, 256, pack), Linear(256, num_classes, pack)])

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i % 2 == 1:
                x = F.max_pool2d(x, 2)
        x = x.flatten(1)
        x = F.relu(self.fcs[0](x))
        x = F.relu(self.fcs[1](x))
        return self.fcs[2](x)


def _conv_net(widths):
    def build(input_shape, num_classes, pack=1):
        model = ConvNet(input_shape, num_classes, widths, pack)
        model.initialise()
        return model

    return build


register("conv2")(_conv_net([64, 64]))
register("conv4")(_conv_net([64, 64, 128, 128]))
register("conv6")(_conv_net([64, 64, 128, 128, 256, 256]))


def shortcut(cin: int, cout: int, stride: int, pack: int) -> nn.Sequential:
    """A residual block's shortcut: the identity, or where the shape changes a 1×1 projection with batch norm, as in
    OpenLTH's cifar_resnet (used by Frankle et al. 2020) and torchvision's ResNets, rather than He et al.'s
    zero-padding shortcut (option A); it adds 2,560 weights to ResNet-20."""
    if stride == 1 and cin == cout:
        return nn.Sequential()
    return nn.Sequential(conv2d(cin, cout, 1, stride, 0, pack, bias=False), nn.BatchNorm2d(cout * pack))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, pack: int):
        super().__init__()
        self.conv1 = conv2d(cin, cout, 3, stride, 1, pack, bias=False)
        self.bn1 = nn.BatchNorm2d(cout * pack)
        self.conv2 = conv2d(cout, cout, 3, 1, 1, pack, bias=False)
        self.bn2 = nn.BatchNorm2d(cout * pack)
        self.shortcut = shortcut(cin, cout, stride, pack)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(PackedNetwork):
    """He et al. (2016), §4.2: the 6n+2-layer CIFAR ResNets with 16, 32 and 64 filters."""

    initialise = kaiming_init

    def __init__(self, input_shape, num_classes, depth: int, pack: int = 1):
        super().__init__()
        n = (depth - 2) // 6
        self.conv = conv2d(input_shape[0], 16, 3, 1, 1, pack, bias=False)
        self.bn = nn.BatchNorm2d(16 * pack)
        blocks, cin = [], 16
        for stage, cout in enumerate([16, 32, 64]):
            for i in range(n):
                blocks.append(Block(cin, cout, 2 if stage > 0 and i == 0 else 1, pack))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = Linear(64, num_classes, pack)
        self.initialise()

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.blocks(x)
        # mean rather than adaptive_avg_pool2d, whose CUDA backward has no deterministic implementation
        return self.fc(x.mean((2, 3)))


for _depth in (20, 32, 56):
    register(f"resnet{_depth}")(lambda input_shape, num_classes, pack=1, depth=_depth: ResNet(input_shape, num_classes, depth, pack))


class Bottleneck(nn.Module):
    """torchvision's ResNet-50 block ("v1.5": the stride on the 3×3 conv, not the first 1×1 as in He et al.'s
    Caffe model): 1×1 to `width`, 3×3, 1×1 to 4 × `width`, a 1×1 projection where the shape changes."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int, pack: int):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = conv2d(cin, width, 1, 1, 0, pack, bias=False)
        self.bn1 = nn.BatchNorm2d(width * pack)
        self.conv2 = conv2d(width, width, 3, stride, 1, pack, bias=False)
        self.bn2 = nn.BatchNorm2d(width * pack)
        self.conv3 = conv2d(width, cout, 1, 1, 0, pack, bias=False)
        self.bn3 = nn.BatchNorm2d(cout * pack)
        self.shortcut = shortcut(cin, cout, stride, pack)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ImageNetResNet(PackedNetwork):
    """He et al. (2016), Table 1, as torchvision builds ResNet-18 (11,689,512 parameters) and ResNet-50
    (25,557,032): a 7×7 stride-2 stem and 3×3 stride-2 max-pooling, four stages of 64-512 filters, global
    average pooling, one linear layer. He-normal (fan-in) weights and zero biases, OpenLTH's `kaiming_normal`
    for its ImageNet ResNets (Frankle et al. 2020), where torchvision draws fan-out."""

    initialise = kaiming_init

    def __init__(self, input_shape, num_classes, block: type[nn.Module], depths: list[int], pack: int = 1):
        super().__init__()
        self.conv = conv2d(input_shape[0], 64, 7, 2, 3, pack, bias=False)
        self.bn = nn.BatchNorm2d(64 * pack)
        expansion = getattr(block, "expansion", 1)
        blocks, cin = [], 64
        for stage, (width, depth) in enumerate(zip([64, 128, 256, 512], depths)):
            for i in range(depth):
                blocks.append(block(cin, width, 2 if stage > 0 and i == 0 else 1, pack))
                cin = width * expansion
        self.blocks = nn.Sequential(*blocks)
        self.fc = Linear(cin, num_classes, pack)
        self.initialise()

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 3, 2, 1)
        return self.fc(self.blocks(x).mean((2, 3)))


register("resnet18")(lambda input_shape, num_classes, pack=1: ImageNetResNet(input_shape, num_classes, Block, [2, 2, 2, 2], pack))
register("resnet50")(lambda input_shape, num_classes, pack=1: ImageNetResNet(input_shape, num_classes, Bottleneck, [3, 4, 6, 3], pack))


class VGG(PackedNetwork):
    """The CIFAR VGG-16 of Frankle et al. (2020), Table 1 (OpenLTH's cifar_vgg_16): 13 3×3 convs with batch
    norm, max-pooling after the 2nd, 4th, 7th and 10th, global average pooling, one linear layer."""

    PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    # OpenLTH's VGG hparams leave the output layer unpruned (`pruning_layers_to_ignore='fc.weight'`); its
    # ResNets prune it.
    dense_layers = ("fc.weight",)
    initialise = kaiming_init

    def __init__(self, input_shape, num_classes, pack: int = 1):
        super().__init__()
        layers, cin = [], input_shape[0]
        for item in self.PLAN:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [conv2d(cin, item, 3, padding=1, pack=pack, bias=False), nn.BatchNorm2d(item * pack), nn.ReLU()]
                cin = item
        self.features = nn.Sequential(*layers)
        self.fc = Linear(512, num_classes, pack)
        self.initialise()

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


register("vgg16")(VGG)


class CNN1d(PackedNetwork):
    """The small 1-D CNN of the MNIST-1D paper (Greydanus 2020): three strided convs of 25 channels. With
    `batch_norm`, each conv is followed by a batch norm (and has no bias): the channel-pruning and Network
    Slimming examples' CPU-sized network."""

    def __init__(self, input_shape, num_classes, pack: int = 1, width: int = 25, batch_norm: bool = False):
        super().__init__()
        self.pack = pack
        self.convs = nn.ModuleList(
            nn.Conv1d(cin * pack, width * pack, k, 2, 1, groups=pack, bias=not batch_norm) for cin, k in [(1, 5), (width, 3), (width, 3)]
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(width * pack) if batch_norm else nn.Identity() for _ in self.convs)
        length = math.prod(input_shape)
        for conv in self.convs:
            length = (length + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
        self.fc = Linear(width * length, num_classes, pack)

    def forward(self, x):
        x = x.reshape(len(x), self.pack, -1)
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return self.fc(x.flatten(1))


register("mnist1d_cnn")(CNN1d)
register("mnist1d_cnn_bn")(lambda input_shape, num_classes, pack=1: CNN1d(input_shape, num_classes, pack, width=32, batch_norm=True))

"""Models: plain ``torch.nn.Module`` objects from [0, 1] pixels to logits.

Every model built here starts with :class:`Normalize`, so the data stays in pixel space
and every epsilon and radius is measured in pixel units. :func:`build` makes the
architectures the profiles use: an MLP, a small CNN, and a ResNet-style net for the full
profile. :func:`best_device` picks CUDA, then MPS, then the CPU.
:func:`imagenet_classifier` wraps a torchvision ImageNet network (optionally with its
pretrained weights, downloaded by torchvision) behind the same :class:`Normalize` first layer.

Devices, dtypes and modes
-------------------------
The device and dtype come from the model's parameters (:func:`device_of`,
:func:`dtype_of`); a function that runs a model moves its inputs there
(:func:`to_model`). **Every function returns its tensors on the device of its input
batch** ``x`` (the data argument; the first tensor argument when there is no model):
CPU data in, CPU results out, whatever device the model is on; data already on the GPU
stays there. :func:`to_input` applies the rule to a result. :func:`eval_mode` runs a
block in eval mode and restores the model's mode; :func:`split_features_head` splits a
classifier into its representation and its linear head.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from . import config
from . import data as _data
from ._validate import check_choice, check_model, check_positive_int

__all__ = ["Normalize", "MLP", "SmallCNN", "ResNet", "ARCHS", "build", "best_device", "device_of", "dtype_of",
           "to_model", "to_input", "eval_mode", "split_features_head", "IMAGENET_ARCHS", "imagenet_classes",
           "imagenet_classifier"]


class Normalize(nn.Module):
    """Subtract a per-channel mean and divide by a per-channel std, inside the model.

    Input of shape (B, C, H, W) or (B, C); ``mean`` and ``std`` have C entries.
    """

    def __init__(self, mean, std):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.shape != std.shape:
            raise ValueError(f"mean and std must have the same length, got {mean.numel()} and {std.numel()}")
        if bool((std <= 0).any()):
            raise ValueError("std must be > 0 in every channel")
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"mean={self.mean.tolist()}, std={self.std.tolist()}"


class MLP(nn.Sequential):
    """Normalize → Flatten → (Linear → ReLU) × len(hidden) → Linear."""

    def __init__(self, in_shape, n_classes: int = 10, hidden=(256, 256), mean=(0.0,), std=(1.0,)):
        check_positive_int(n_classes, "n_classes")
        in_features = 1
        for s in in_shape:
            in_features *= int(s)
        layers: list[nn.Module] = [Normalize(mean, std), nn.Flatten()]
        for h in hidden:
            check_positive_int(h, "hidden")
            layers += [nn.Linear(in_features, h), nn.ReLU()]
            in_features = h
        layers.append(nn.Linear(in_features, n_classes))
        super().__init__(*layers)


class SmallCNN(nn.Sequential):
    """Normalize → conv(w) → conv(2w, stride 2) → conv(2w, stride 2) → Linear(128) → Linear.

    Every conv is 3x3 with padding 1 followed by a ReLU; ``width`` is ``w``.
    On 8x8 digits with w = 16 it has about 45 k parameters.
    """

    def __init__(self, in_shape, n_classes: int = 10, width: int = 16, mean=(0.0,), std=(1.0,)):
        check_positive_int(width, "width")
        check_positive_int(n_classes, "n_classes")
        c, h, w = (int(s) for s in in_shape)
        for _ in range(2):
            h, w = (h + 1) // 2, (w + 1) // 2
        super().__init__(
            Normalize(mean, std),
            nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
            nn.Linear(2 * width * h * w, 128), nn.ReLU(),
            nn.Linear(128, n_classes),
        )


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet-style net for 32x32 images (three stages of ``blocks`` basic blocks,
    widths w, 2w, 4w), preceded by :class:`Normalize`. ``blocks=3`` is ResNet-20."""

    def __init__(self, in_shape, n_classes: int = 10, width: int = 16, blocks: int = 3, mean=(0.0,), std=(1.0,)):
        super().__init__()
        check_positive_int(width, "width")
        check_positive_int(blocks, "blocks")
        c = int(in_shape[0])
        self.normalize = Normalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, c_in = [], width
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            for j in range(blocks):
                stages.append(_BasicBlock(c_in, c_out, 2 if (i > 0 and j == 0) else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, n_classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(self.normalize(x))))


ARCHS = ("mlp", "cnn", "resnet")


def build(arch: str | None = None, dataset: str | None = None, *, width: int | None = None, seed: int | None = 0) -> nn.Module:
    """Build a fresh model for a data set, with that data set's :class:`Normalize` first.

    Parameters
    ----------
    arch : {"mlp", "cnn", "resnet"}, optional
        Defaults to the active profile's architecture (under the full profile, the
        ResNet for CIFAR-10).
    dataset : str, optional
        Defaults to the active profile's data set; fixes the input shape, number of
        classes and normalization statistics.
    width : int, optional
        Base width (hidden units / 16 for the MLP); defaults to the profile's.
    seed : int or None
        Seed for the initial weights (``None``: do not reseed).

    Examples
    --------
    >>> model = build("cnn", "digits")
    >>> model(torch.rand(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    prof = config.profile()
    meta = _data.info(dataset)
    if arch is None:
        arch = "resnet" if (prof.name == "full" and meta.name == "cifar10") else prof.arch
    check_choice(arch, "arch", ARCHS)
    width = prof.width if width is None else width
    check_positive_int(width, "width")
    if seed is not None:
        torch.manual_seed(seed)
    kw = dict(n_classes=meta.n_classes, mean=meta.mean, std=meta.std)
    if arch == "mlp":
        return MLP(meta.shape, hidden=(16 * width, 16 * width), **kw)
    if arch == "cnn":
        return SmallCNN(meta.shape, width=width, **kw)
    return ResNet(meta.shape, width=width, **kw)


# torchvision's ImageNet classifiers the course uses, with the name of their weights enum
IMAGENET_ARCHS = {"resnet18": "ResNet18_Weights", "resnet50": "ResNet50_Weights"}


def _imagenet_weights(arch: str):
    import torchvision

    check_choice(arch, "arch", IMAGENET_ARCHS)
    return getattr(torchvision.models, IMAGENET_ARCHS[arch]).DEFAULT


def imagenet_classes(arch: str = "resnet18") -> tuple:
    """The 1,000 ImageNet class names, from the metadata of torchvision's weights (no download).

    >>> names = imagenet_classes()
    >>> len(names), names[0]
    (1000, 'tench')
    """
    return tuple(_imagenet_weights(arch).meta["categories"])


def imagenet_classifier(arch: str = "resnet18", *, pretrained: bool = True) -> nn.Module:
    """A torchvision ImageNet classifier from [0, 1] pixels (B, 3, H, W) to 1,000 logits, in eval mode.

    The model is ``nn.Sequential(Normalize(mean, std), net)`` with the per-channel statistics
    of the weights' own preprocessing (``weights.transforms()``), so inputs stay in pixel space
    like every model of the course. Class names:
    :func:`imagenet_classes`. Images of 224 x 224 pixels match the training resolution.

    Parameters
    ----------
    arch : {"resnet18", "resnet50"}
        The torchvision architecture.
    pretrained : bool
        Load the weights ``<Arch>_Weights.DEFAULT``; torchvision **downloads** them into its
        cache (``$TORCH_HOME``) the first time. ``False`` builds the same architecture with
        random weights and downloads nothing (for tests and offline runs).

    Examples
    --------
    >>> model = imagenet_classifier(pretrained=False)
    >>> model(torch.rand(1, 3, 64, 64)).shape
    torch.Size([1, 1000])
    """
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {type(pretrained).__name__}")
    import torchvision

    weights = _imagenet_weights(arch)
    net = getattr(torchvision.models, arch)(weights=weights if pretrained else None)
    preprocess = weights.transforms()
    return nn.Sequential(Normalize(preprocess.mean, preprocess.std), net).eval()


def best_device() -> torch.device:
    """The best available device: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_of(model: nn.Module) -> torch.device:
    """The device of a model's parameters (or buffers); the CPU for a model with neither."""
    check_model(model)
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def dtype_of(model: nn.Module) -> torch.dtype:
    """The floating dtype of a model's parameters (or buffers); ``torch.float32`` for a model with neither.

    Examples
    --------
    >>> dtype_of(build("mlp", "digits").double())
    torch.float64
    """
    check_model(model)
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    for t in model.buffers():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _check_tensors(tensors, what: str):
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}[{i}] must be a torch.Tensor, got {type(t).__name__}")


def to_model(model: nn.Module, *tensors: torch.Tensor):
    """Move tensors to the model's device; floating tensors also take the model's dtype.

    Integer tensors (labels, indices) keep their dtype. Returns one tensor for one
    argument, else a tuple in the same order.

    Examples
    --------
    >>> model = build("mlp", "digits").double()
    >>> x, y = to_model(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    >>> x.dtype, y.dtype
    (torch.float64, torch.int64)
    """
    device, dtype = device_of(model), dtype_of(model)
    _check_tensors(tensors, "tensors")
    out = tuple(t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device) for t in tensors)
    return out[0] if len(out) == 1 else out


def to_input(x: torch.Tensor, *tensors: torch.Tensor):
    """Move results to the device of the input batch ``x``: the package's rule for returned tensors.

    Dtypes are kept. Returns one tensor for one result, else a tuple in the same order.

    Examples
    --------
    >>> to_input(torch.zeros(3), torch.ones(3)).device
    device(type='cpu')
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    _check_tensors(tensors, "tensors")
    out = tuple(t.to(x.device) for t in tensors)
    return out[0] if len(out) == 1 else out


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Put ``model`` in eval mode for the ``with`` block and restore its mode afterwards.

    The mode of every submodule is restored as it was (a model whose BatchNorm alone
    was in eval mode gets it back), also when the block raises.

    Examples
    --------
    >>> model = build("mlp", "digits").train()
    >>> with eval_mode(model):
    ...     model.training
    False
    >>> model.training
    True
    """
    check_model(model)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            m.training = mode


def split_features_head(model: nn.Module):
    r"""Split a classifier into its features :math:`g` and its linear head: ``model(x) == head(g(x))``.

    :math:`g(x)` is the input of the last ``Linear`` layer (the penultimate layer, 128
    units for :class:`SmallCNN`). Both parts share the model's modules (no copy), so they
    follow its device and mode changes. Supports ``nn.Sequential`` models (:class:`MLP`,
    :class:`SmallCNN`) and :class:`ResNet`.

    Returns
    -------
    (nn.Sequential, nn.Module)
        ``features`` and ``head``.

    Examples
    --------
    >>> model = build("cnn", "digits")
    >>> g, head = split_features_head(model)
    >>> x = torch.rand(2, 1, 8, 8)
    >>> g(x).shape, bool(torch.allclose(head(g(x)), model(x)))
    (torch.Size([2, 128]), True)
    """
    check_model(model)
    if isinstance(model, ResNet):
        *pool, last = list(model.head)
        return nn.Sequential(model.normalize, model.stem, model.stages, *pool), last
    if isinstance(model, nn.Sequential):
        layers = list(model)
        idx = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
        if not idx or idx[-1] == 0:
            raise ValueError("model must be an nn.Sequential with a linear layer after some feature layers")
        i = idx[-1]
        return nn.Sequential(*layers[:i]), nn.Sequential(*layers[i:])
    raise TypeError(f"model must be an nn.Sequential or a robustlab ResNet to split it, got {type(model).__name__}")

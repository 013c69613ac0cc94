r"""LPIPS as a distance: the neural perceptual distance of Laidlaw, Singla and Feizi (2021).

A feature network :math:`g` maps an input to activations :math:`g_l(x)` of shape
:math:`C_l \times H_l \times W_l` at a few chosen layers :math:`l`. At every spatial
position :math:`(h, w)` the channel vector is divided by its L2 norm,
:math:`\hat g_{l,hw}(x) = g_{l,hw}(x) / (\|g_{l,hw}(x)\|_2 + 10^{-10})`, and the squared
differences are averaged over the positions of each layer:

.. math::

    d(x_1, x_2)^2 = \sum_l \frac{1}{H_l W_l} \sum_{h, w}
    \big\|\hat g_{l,hw}(x_1) - \hat g_{l,hw}(x_2)\big\|_2^2 ,

so :math:`d(x_1, x_2) = \|\phi(x_1) - \phi(x_2)\|_2` with :math:`\phi` the concatenation of
the normalized features, each layer's scaled by :math:`1/\sqrt{H_l W_l}` (:meth:`LPIPS.embed`).
As in the reference code, LPIPS's learned per-channel weights (the "lin" layers of Zhang et
al., 2018) are not used, and the distance is the square root. It is dimensionless.

What each ingredient changes:

* **Unit-normalized channels** (``normalize=True``): only the *direction* of a position's
  feature vector counts, not its size, so a layer whose activations are large does not
  dominate and every layer contributes at most 2 to :math:`d` (two unit vectors are at most
  2 apart): :math:`d \le 2\sqrt{\#\text{layers}}`. A position where every channel is 0 (a
  dead ReLU patch, frequent on the black background of a digit) maps to the zero vector,
  at distance 1 from any position that lights up. With ``normalize=False`` the distance is
  a plain weighted L2 distance between raw activations, unbounded and dominated by the
  layers of largest activation.
* **Spatial averaging** (``spatial_average=True``, the :math:`1/(H_l W_l)`): every layer
  weighs the same whatever its resolution. Without it (a sum over positions) the
  high-resolution early layers, which see pixels, outweigh the coarse late ones, which see
  shapes, by the ratio of their numbers of positions.
* **The feature network.** A fixed network (:func:`lpips_net`: a small CNN trained once on
  the data and never changed, the analogue of the authors' CIFAR-10 AlexNet) gives one
  threat model for every classifier, which is what an evaluation needs. The *self-bound*
  variant (:meth:`LPIPS.self_bound`) uses the classifier's own convolutional features, as
  PAT-self does: no second network, but the threat model then depends on the model under
  attack (and changes while it trains), so accuracies of different models are not on one
  threat model; and for a normally trained, sensitive network the ball is tiny in pixel
  space, which makes self-bound attacks weak on it (perceptual-advex issue #4).

Nothing here says that LPIPS on 8x8 digits tracks human perception: the paper's
perceptual study was on CIFAR-10 and ImageNet images with AlexNet features.

Examples
--------
>>> import torch
>>> import robustlab as rl
>>> net = rl.models.build("cnn", "digits", width=4)
>>> dist = LPIPS(net, layers=(2, 4, 6))
>>> x = torch.rand(3, 1, 8, 8)
>>> dist(x, x).tolist()
[0.0, 0.0, 0.0]
>>> bool((dist(x, x.flip(0)) <= 2 * 3 ** 0.5 + 1e-5).all())
True
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .. import cache as _cache
from .. import config
from .. import data as _data
from .. import models as _models
from .._validate import check_choice, check_images, check_model, check_same_shape

__all__ = ["LPIPS", "lpips_net", "conv_feature_layers", "NORMALIZE_EPS"]

#: Added to the channel norm before dividing (the reference's 1e-10).
NORMALIZE_EPS = 1e-10


def conv_feature_layers(net: nn.Module) -> tuple:
    """Indices of the activation modules that follow each convolution of an ``nn.Sequential``.

    For :class:`robustlab.models.SmallCNN` these are the three ReLUs after its three
    convolutions, ``(2, 4, 6)``: the layers whose outputs LPIPS compares.

    >>> import robustlab as rl
    >>> conv_feature_layers(rl.models.build("cnn", "digits", width=4))
    (2, 4, 6)
    """
    if not isinstance(net, nn.Sequential):
        raise TypeError(f"net must be an nn.Sequential to find its conv layers, got {type(net).__name__}")
    mods = list(net)
    out = []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Conv2d):
            j = i + 1 if i + 1 < len(mods) and not isinstance(mods[i + 1], (nn.Conv2d, nn.Linear, nn.Flatten)) else i
            out.append(j)
    if not out:
        raise ValueError("net must contain at least one nn.Conv2d layer")
    return tuple(out)


class LPIPS(nn.Module):
    r"""The neural perceptual distance :math:`d(x_1, x_2) = \|\phi(x_1) - \phi(x_2)\|_2` (see the module).

    Parameters
    ----------
    net : nn.Sequential
        The feature network, mapping inputs in [0, 1] to activations (normalization inside,
        as every robustlab model). It is used as given: a fixed net should be in eval mode
        with its parameters frozen (:func:`lpips_net` does both); the self-bound variant
        shares the classifier's modules.
    layers : sequence of int, optional
        Indices into ``net`` whose outputs are compared; default
        :func:`conv_feature_layers` (the activation after every convolution). 2-D outputs
        (B, C) count as one position.
    normalize : bool
        Divide each position's channel vector by its L2 norm (LPIPS); False: raw activations.
    spatial_average : bool
        Divide each layer's sum over positions by its number of positions (LPIPS); False: sum.
    name : str
        How the distance is described in its ``repr``: with ``"fixed"`` the ``repr`` holds a
        fingerprint of the network's weights (so :func:`robustlab.train.fit`'s cache keys on
        them); with ``"self"`` it does not (the weights are the classifier's own).
    """

    def __init__(self, net: nn.Module, layers: Sequence[int] | None = None, *, normalize: bool = True,
                 spatial_average: bool = True, name: str = "fixed"):
        super().__init__()
        check_model(net, "net")
        if not isinstance(net, nn.Sequential):
            raise TypeError(f"net must be an nn.Sequential (robustlab's MLP and SmallCNN are), got {type(net).__name__}")
        layers = conv_feature_layers(net) if layers is None else tuple(layers)
        if not layers:
            raise ValueError("layers must name at least one layer of net")
        for i in layers:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(net):
                raise ValueError(f"layers must hold indices 0..{len(net) - 1} of net, got {layers}")
        if list(layers) != sorted(set(layers)):
            raise ValueError(f"layers must be increasing and distinct, got {layers}")
        for flag, fname in ((normalize, "normalize"), (spatial_average, "spatial_average")):
            if not isinstance(flag, bool):
                raise TypeError(f"{fname} must be True or False, got {type(flag).__name__}")
        self.name = check_choice(name, "name", ("fixed", "self"))
        self.net = net
        self.layers = layers
        self.normalize = normalize
        self.spatial_average = spatial_average

    @classmethod
    def self_bound(cls, model: nn.Module, layers: Sequence[int] | None = None, **kwargs) -> "LPIPS":
        """LPIPS with the classifier's own features (PAT-self): shares ``model``'s modules, no copy."""
        return cls(model, layers, name="self", **kwargs)

    def __repr__(self) -> str:  # the cache key of a PAT run includes it
        what = "self" if self.name == "self" else \
            f"{type(self.net).__name__}@{_cache.fingerprint(*self.net.state_dict().values())}"
        return (f"LPIPS(net={what}, layers={self.layers}, normalize={self.normalize}, "
                f"spatial_average={self.spatial_average})")

    def activations(self, x: torch.Tensor) -> list:
        """The raw outputs :math:`g_l(x)` of the chosen layers (a list, one tensor per layer)."""
        out, last = [], self.layers[-1]
        h = x
        for i, m in enumerate(self.net):
            h = m(h)
            if i in self.layers:
                out.append(h)
            if i == last:
                break
        return out

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\phi(x)`, shape (B, D): the normalized, scaled features, flattened and concatenated."""
        x = _models.to_model(self.net, x)
        parts = []
        for a in self.activations(x):
            if a.dim() == 2:
                a = a[:, :, None, None]
            if self.normalize:
                a = a / (a.norm(dim=1, keepdim=True) + NORMALIZE_EPS)
            if self.spatial_average:
                a = a / math.sqrt(a.shape[2] * a.shape[3])
            parts.append(a.flatten(1))
        return torch.cat(parts, 1)

    def squared(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """:math:`d(x_1, x_2)^2`, shape (B,) (differentiable everywhere, unlike its root at 0)."""
        return (self.embed(x1) - self.embed(x2)).pow(2).sum(1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """:math:`d(x_1, x_2)`, shape (B,), on the device of ``x1``; inputs (B, ...) in [0, 1]."""
        check_images(x1, "x1")
        check_images(x2, "x2")
        check_same_shape(x1, x2, "x1", "x2")
        return self.squared(x1, x2).sqrt().to(x1.device)

    def layer_distances(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Each layer's contribution to :math:`d^2`, shape (B, #layers); the rows sum to ``d**2``."""
        check_images(x1, "x1")
        check_images(x2, "x2")
        check_same_shape(x1, x2, "x1", "x2")
        sizes = []
        for a in self.activations(_models.to_model(self.net, x1[:1])):
            sizes.append(a[0].numel())
        diff = (self.embed(x1) - self.embed(x2)).pow(2)
        return torch.stack([c.sum(1) for c in diff.split(sizes, dim=1)], 1).to(x1.device)


def lpips_net(dataset: str | None = None, *, seed: int = 1, width: int | None = None, progress: bool | None = None,
              cache: bool = True) -> LPIPS:
    """The fixed LPIPS distance of the course: a small CNN trained once on the data, then frozen.

    The network is the profile's standard CNN (:func:`robustlab.train.trained_model` with
    ``arch="cnn"`` and its own ``seed``, 1, so it is not the classifiers' seed-0 network),
    trained with cross-entropy and cached on disk; LPIPS compares the outputs of its three
    convolutional ReLUs. Its parameters are frozen and it is in eval mode. This is the
    course's stand-in for the authors' AlexNet trained on CIFAR-10 ("alexnet_cifar"): no
    download, and one fixed threat model for every classifier (zoo recipe ``"lpips-net"``).

    Returns
    -------
    LPIPS
        On :func:`robustlab.models.best_device`.
    """
    from ..train import trained_model

    dataset = config.profile().dataset if dataset is None else _data.info(dataset).name
    net = trained_model(dataset, arch="cnn", width=width, seed=seed, progress=progress, cache=cache).model
    net.eval().requires_grad_(False)
    return LPIPS(net).eval()

"""NICE: additive coupling layers and a diagonal scaling (Dinh, Krueger and Bengio, 2015)."""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import nn

from ...registry import register_model
from .core import FlowModel
from .dequantization import LogitTransform
from ...nets import mlp
from ...checks import as_event_shape, count, widths

__all__ = ["AdditiveCoupling", "DiagonalScaling", "NICE", "alternating_mask"]


def alternating_mask(dim: int, parity: int) -> torch.Tensor:
    """1 on the even (``parity=0``) or odd (``parity=1``) coordinates of a vector of size ``dim``.

    Example::

        >>> alternating_mask(5, 1)
        tensor([0., 1., 0., 1., 0.])
    """
    return ((torch.arange(dim) + parity) % 2 == 0).to(torch.get_default_dtype())


class MaskedCoupling(TransformModule):
    """Base of the masked couplings: coordinates where ``mask == 1`` pass through and condition ``net``."""

    bijective = True

    def __init__(self, mask: torch.Tensor, net: nn.Module):
        super().__init__(cache_size=0)
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask: expected a tensor of zeros and ones")
        self.register_buffer("mask", mask.clone())
        self.net = net
        self._event_dim = mask.dim()

    @property
    def domain(self):
        return constraints.independent(constraints.real, self._event_dim)

    @property
    def codomain(self):
        return self.domain


class AdditiveCoupling(MaskedCoupling):
    """NICE's additive coupling layer, with a binary mask :math:`b` choosing the kept half.

    .. math:: y = x + (1 - b) \\odot m(b \\odot x), \\qquad
              x = y - (1 - b) \\odot m(b \\odot y), \\qquad
              \\log\\left|\\det \\frac{\\partial y}{\\partial x}\\right| = 0

    (Dinh et al., 2015, eq. 6 with :math:`I_1 = \\{i: b_i = 1\\}`). Both
    directions cost one pass of :math:`m`. The mask's shape is the event shape.

    Args:
        mask: 0/1 tensor of the event shape; 1 marks the coordinates passed through.
        net: maps ``b * x`` to a tensor of the same shape.

    Example::

        >>> import torch
        >>> t = AdditiveCoupling(alternating_mask(4, 0), mlp((4, 8, 4)))
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-6)
        True

    Reference: L. Dinh, D. Krueger, Y. Bengio. NICE: Non-linear Independent
    Components Estimation. ICLR 2015 workshop, arXiv:1410.8516.
    """

    bijective = True
    volume_preserving = True

    def _call(self, x):
        return x + (1 - self.mask) * self.net(self.mask * x)

    def _inverse(self, y):
        return y - (1 - self.mask) * self.net(self.mask * y)

    def log_abs_det_jacobian(self, x, y):
        return x.new_zeros(x.shape[:x.dim() - self._event_dim])


class DiagonalScaling(TransformModule):
    """NICE's last layer: :math:`y = \\exp(s) \\odot x`, with :math:`\\log|\\det| = \\sum_i s_i`.

    Example::

        >>> import torch
        >>> t = DiagonalScaling(3)
        >>> t.log_abs_det_jacobian(torch.ones(2, 3), None)
        tensor([0., 0.], grad_fn=<ExpandBackward0>)
    """

    bijective = True

    def __init__(self, event_shape):
        super().__init__(cache_size=0)
        shape = as_event_shape(event_shape)
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self._event_dim = len(shape)

    @property
    def domain(self):
        return constraints.independent(constraints.real, self._event_dim)

    codomain = domain

    def _call(self, x):
        return x * self.log_scale.exp()

    def _inverse(self, y):
        return y * (-self.log_scale).exp()

    def log_abs_det_jacobian(self, x, y):
        return self.log_scale.sum().expand(x.shape[:x.dim() - self._event_dim])


class NICE(FlowModel):
    """NICE on vectors of size ``dim``: ``num_couplings`` additive couplings with
    alternating (even/odd) partitions, then the diagonal scaling.

    .. math:: \\log p(x) = \\sum_i \\log p_H(h_i) + \\sum_i s_i

    Args:
        dim: the data dimension (>= 2).
        num_couplings: number of additive coupling layers (NICE uses 4).
        hidden: hidden widths of each coupling network :math:`m`.
        logit: if given, the data lie in [0, 1) and are first mapped by
            :class:`LogitTransform` with this ``alpha`` (its log-det is counted).

    Example::

        >>> import torch
        >>> flow = NICE(2, num_couplings=2, hidden=(8,))
        >>> flow.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    def __init__(self, dim: int, num_couplings: int = 4, hidden=(256, 256), logit: float | None = None):
        count("dim", dim, 2)
        count("num_couplings", num_couplings)
        parts = [LogitTransform(logit)] if logit is not None else []
        hidden = widths("hidden", hidden, allow_empty=True)
        parts += [AdditiveCoupling(alternating_mask(dim, i % 2), coupling_net(dim, hidden))
                  for i in range(num_couplings)]
        super().__init__(dim, parts + [DiagonalScaling(dim)])


#: Standard deviation of the coupling networks' last-layer weights at initialisation (biases start at zero).
LAST_INIT_STD = 1e-2


def coupling_net(dim: int, hidden) -> nn.Sequential:
    """The MLP :math:`m` of one additive coupling: ReLU layers, the last one's weights small and random.

    Not zero: with a zero last layer, the hidden layers get no gradient and the last
    one only :math:`E[x_2 h(x_1)]`, which is zero when the data are symmetric about 0
    given the kept half (8 Gaussians), so only sampling noise moves it; Adam turns that
    noise into full-size steps, the ReLUs die, and NICE stays at a Gaussian. Small
    random weights give the hidden layers a gradient from the first step.

    Example::

        >>> net = coupling_net(4, (8,))
        >>> bool(net[-1].bias.eq(0).all()), bool(net[-1].weight.ne(0).all())
        (True, True)
    """
    net = mlp((dim, *hidden, dim), zero_init=True)
    nn.init.normal_(net[-1].weight, std=LAST_INIT_STD)
    return net


def _logit_for(data_kind):
    return 0.05 if data_kind == "continuous" else None


def _flat_dim(event_shape):
    shape = as_event_shape(event_shape)
    if len(shape) != 1:
        raise ValueError(f"event_shape: this flow takes flat vectors, got shape {tuple(shape)}")
    return shape[0]


@register_model("nice", family="flow", data_kinds=("continuous", "points"),
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 128},
                description="NICE: additive couplings + diagonal scaling")
def _build_nice(event_shape, data_kind, num_couplings=4, hidden=(256, 256), **options):
    return NICE(_flat_dim(event_shape), num_couplings, hidden, logit=_logit_for(data_kind))

"""Neural spline flows (Durkan et al., 2019): rational-quadratic spline couplings and autoregressive layers.

Each layer is one of Pyro's spline transforms (``SplineCoupling``,
``SplineAutoregressive``) with ``order="quadratic"``: a monotonic
rational-quadratic spline of ``count_bins`` segments on the box
:math:`[-B, B]`, the identity outside it. Data outside the box would pass
through every layer untouched (Pyro's default ``B = 3`` leaves 2-D toys on
:math:`[-4.5, 4.5]^2` partly unmodelled), so the first layer,
:class:`BoxScale`, divides the data by a per-coordinate scale set from the
first batch it sees, putting every point well inside the box.

Reference: C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. Neural Spline
Flows. NeurIPS 2019, arXiv:1906.04032.
"""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import Permute, SplineAutoregressive, SplineCoupling
from pyro.nn import AutoRegressiveNN, DenseNN

from ...checks import count, positive, widths
from ...registry import register_model
from .core import FlowModel, ScoredOnce
from .dequantization import LogitTransform
from .nice import _flat_dim, _logit_for

__all__ = ["BoxScale", "RQSplineCoupling", "RQSplineAutoregressive", "NeuralSplineFlow"]

#: The splines' box: [-BOUND, BOUND] in the scaled coordinates.
BOUND = 3.0


class BoxScale(TransformModule):
    """``y = x / s`` per coordinate, ``s`` set from data so the data fill a fraction of the spline box.

    On the first call in the normalizing direction with ``s`` unset, ``s_d =
    max_i |x_id| / (fill * bound)`` for the batch (at least ``1e-3``), so
    that batch lies in ``[-fill * bound, fill * bound]``; ``s`` is a buffer
    after that (saved and restored with the model, not trained).

    Example::

        >>> t = BoxScale(2, bound=3.0, fill=0.5)
        >>> y = t(torch.tensor([[6.0, -1.0], [3.0, 0.5]]))
        >>> y.abs().max(0).values
        tensor([1.5000, 1.5000])
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    def __init__(self, dim: int, bound: float = BOUND, fill: float = 0.7, scale=None):
        super().__init__(cache_size=0)
        count("dim", dim)
        self.bound, self.fill = positive("bound", bound), positive("fill", fill)
        if not self.fill < 1.0:
            raise ValueError(f"fill: expected a number in (0, 1), got {fill!r}")
        s = torch.full((dim,), float("nan")) if scale is None else torch.as_tensor(scale, dtype=torch.float).expand(dim)
        self.register_buffer("scale", s.clone())

    @torch.no_grad()
    def _initialize(self, x):
        reach = x.detach().abs().reshape(-1, self.scale.shape[0]).max(0).values
        self.scale.copy_((reach / (self.fill * self.bound)).clamp_min(1e-3))

    def _call(self, x):
        if torch.isnan(self.scale).any():
            self._initialize(x)
        return x / self.scale

    def _inverse(self, y):
        return y * self.scale

    def log_abs_det_jacobian(self, x, y):
        return (-self.scale.log().sum()).expand(x.shape[:-1])


class _Fresh(ScoredOnce):
    """:class:`ScoredOnce` for Pyro's splines, which keep their log-det in ``_cache_log_detJ``."""

    def log_abs_det_jacobian(self, x, y):
        out = super().log_abs_det_jacobian(x, y)
        self._cache_log_detJ = None
        lower = getattr(self, "lower_spline", None)
        if lower is not None:  # a coupling's elementwise spline keeps its last pass: hold no graph (deepcopy works)
            lower._cached_x_y, lower._cache_log_detJ = (None, None), None
        return out


class RQSplineCoupling(_Fresh, SplineCoupling):
    """A rational-quadratic spline coupling: the first half through an elementwise spline, the second
    through a spline whose knots a :class:`~pyro.nn.DenseNN` computes from the first half.

    Example::

        >>> _ = torch.manual_seed(0)  # float32 inverses: within 1e-5 here, up to about 5e-4 on other draws
        >>> t = RQSplineCoupling(4, hidden=(8,))
        >>> x = torch.randn(5, 4)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
        True
    """

    def __init__(self, dim: int, hidden=(64, 64), count_bins: int = 8, bound: float = BOUND):
        count("dim", dim, 2)
        count("count_bins", count_bins, 2)
        split, rest = dim // 2, dim - dim // 2
        net = DenseNN(split, list(widths("hidden", hidden)),
                      param_dims=[rest * count_bins, rest * count_bins, rest * (count_bins - 1)])
        super().__init__(dim, split, net, count_bins, positive("bound", bound), order="quadratic")


class RQSplineAutoregressive(_Fresh, SplineAutoregressive):
    """A rational-quadratic spline autoregressive layer: the knots of coordinate d come from an
    :class:`~pyro.nn.AutoRegressiveNN` of the coordinates before it in ``permutation``.

    Density in one pass; its inverse (sampling) takes ``dim`` passes.

    Example::

        >>> t = RQSplineAutoregressive(3, hidden=(8,))
        >>> x = torch.randn(5, 3)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-4)
        True
    """

    def __init__(self, dim: int, hidden=(64, 64), count_bins: int = 8, bound: float = BOUND, permutation=None):
        count("dim", dim, 2)
        count("count_bins", count_bins, 2)
        net = AutoRegressiveNN(dim, list(widths("hidden", hidden)), param_dims=[count_bins, count_bins, count_bins - 1],
                               permutation=permutation)
        super().__init__(dim, net, count_bins, positive("bound", bound), order="quadratic")


class NeuralSplineFlow(FlowModel):
    """A neural spline flow on vectors: :class:`BoxScale`, then ``num_layers`` spline layers with
    the coordinates reversed between them.

    Args:
        dim: data dimension (at least 2).
        num_layers: spline layers.
        hidden: hidden widths of each layer's network.
        count_bins: spline segments per coordinate.
        autoregressive: spline autoregressive layers (NSF-AR) instead of couplings (NSF-C).
        logit: for data in [0, 1), a :class:`LogitTransform` with this alpha first.
        scale: the data scale of :class:`BoxScale` (default: set from the first batch).

    Example::

        >>> flow = NeuralSplineFlow(2, num_layers=2, hidden=(8,))
        >>> flow.log_prob(torch.zeros(3, 2)).shape, flow.sample(4).shape
        (torch.Size([3]), torch.Size([4, 2]))
    """

    def __init__(self, dim: int, num_layers: int = 4, hidden=(64, 64), count_bins: int = 8,
                 autoregressive: bool = False, logit: float | None = None, scale=None):
        count("dim", dim, 2)
        count("num_layers", num_layers)
        reverse = torch.arange(dim - 1, -1, -1)
        parts = [LogitTransform(logit)] if logit is not None else []
        parts.append(BoxScale(dim, BOUND, scale=scale))
        for i in range(num_layers):
            if i > 0:
                parts.append(Permute(reverse, cache_size=0))  # Pyro's cache would hold a graph: no deepcopy
            layer = RQSplineAutoregressive if autoregressive else RQSplineCoupling
            parts.append(layer(dim, hidden, count_bins, BOUND))
        super().__init__(dim, parts)


@register_model("nsf", family="flow", data_kinds=("continuous", "points"),
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 128},
                description="neural spline flow: rational-quadratic spline couplings")
def _build_nsf(event_shape, data_kind, num_layers=4, hidden=(64, 64), count_bins=8, **options):
    return NeuralSplineFlow(_flat_dim(event_shape), num_layers, hidden, count_bins, logit=_logit_for(data_kind))


@register_model("nsf-ar", family="flow", data_kinds=("continuous", "points"),
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 128},
                description="neural spline flow: rational-quadratic spline autoregressive layers")
def _build_nsf_ar(event_shape, data_kind, num_layers=4, hidden=(64, 64), count_bins=8, **options):
    return NeuralSplineFlow(_flat_dim(event_shape), num_layers, hidden, count_bins, autoregressive=True,
                            logit=_logit_for(data_kind))

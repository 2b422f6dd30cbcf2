"""The flow model every flow in this package is: a base density pushed through a bijection.

A flow is written as its *normalizing* map :math:`f: x \\mapsto z` (data to
noise), a :class:`~pyro.distributions.torch_transform.ComposeTransformModule`
of Pyro ``TransformModule``\\ s. The data distribution is the Pyro
distribution ``TransformedDistribution(base, [f.inv])``, so by the change of
variables (Dinh et al., 2015, eq. 3)

.. math:: \\log p_X(x) = \\log p_Z(f(x)) + \\log \\left|\\det \\frac{\\partial f(x)}{\\partial x}\\right|

is one pass of :math:`f` (``log_prob``) and sampling is one pass of
:math:`f^{-1}` (``sample``).
"""

from __future__ import annotations

import functools
import operator

import pyro.distributions as dist
import torch
from pyro.distributions.torch_transform import ComposeTransformModule
from pyro.nn import PyroModule
from torch.distributions.transforms import _InverseTransform
from torch.distributions.utils import _sum_rightmost

from ..base import DistributionModel
from .dequantization import UniformDequantization
from ...checks import as_event_shape
from ...programs import site_log_prob

__all__ = ["FlowModel", "SequentialFlow", "ScoredOnce", "Remembered"]


class ScoredOnce:
    """Mixin for Pyro transforms that keep ``_cached_log_scale``: no stale (x, y) cache.

    Pyro's affine transforms cache their last ``(x, y)`` pair by object
    identity, so scoring the *same* tensor after a parameter update returns
    the old ``y``. With this mixin the cache never skips a call
    (``cache_size=0``); the pair is remembered only so that
    ``log_abs_det_jacobian`` reuses the log-scales of the call just made.

    Example::

        >>> from pyro.distributions.transforms import AffineCoupling
        >>> class FreshAffineCoupling(ScoredOnce, AffineCoupling):
        ...     pass
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._cache_size = 0
        self._cached_x_y = None, None

    def _call(self, x):
        y = super()._call(x)
        self._cached_x_y = x, y
        return y

    def _inverse(self, y):
        x = super()._inverse(y)
        self._cached_x_y = x, y
        return x

    def log_abs_det_jacobian(self, x, y):
        out = super().log_abs_det_jacobian(x, y)
        self._cached_x_y, self._cached_log_scale = (None, None), None  # hold no graph (deepcopy works)
        return out


class Remembered:
    """Mixin for transforms whose log-det comes out of the forward pass.

    ``_call``/``_inverse`` store ``(x, y, log_det)`` with :meth:`_remember`;
    ``log_abs_det_jacobian(x, y)`` returns the stored value when called with
    those very tensors and otherwise runs ``_call(x)`` again, and then forgets
    them. There is no cache that skips a call, so a parameter update is never
    hidden.
    """

    _last = None

    def _remember(self, x, y, log_det):
        self._last = x, y, log_det

    def log_abs_det_jacobian(self, x, y):
        last = self._last
        if last is None or last[0] is not x or last[1] is not y:
            self._call(x)
            last = self._last
        self._last = None
        return last[2]


class SequentialFlow(ComposeTransformModule):
    """A composition that keeps the intermediate values of its last pass.

    Pyro's ``ComposeTransform.log_abs_det_jacobian`` recomputes every
    intermediate value unless each part caches its (x, y) pair, the cache
    that turns stale after a parameter update. This composition stores the
    trajectory of the pass it just made and hands each part its own input and
    output, so parts without a cache score in one pass. ``inv`` is the plain
    inverse of this transform (not a composition of the parts' inverses).

    Example::

        >>> import torch
        >>> from pyro_dgm.models.flows import DiagonalScaling
        >>> f = SequentialFlow([DiagonalScaling(2), DiagonalScaling(2)])
        >>> x = torch.ones(3, 2)
        >>> f.log_abs_det_jacobian(x, f(x))
        tensor([0., 0., 0.], grad_fn=<AddBackward0>)
    """

    def __init__(self, parts):
        super().__init__(parts, cache_size=0)
        self._trajectory = None

    def __call__(self, x):
        return self._call(x)

    # torch recomputes a composition's domain and codomain through every part at each access
    # (about 1 ms for Glow's, several times per step); the parts never change, so once is enough.
    @functools.cached_property
    def domain(self):
        return super().domain

    @functools.cached_property
    def codomain(self):
        return super().codomain

    @property
    def inv(self):
        # ComposeTransform.inv composes the parts' inverses, whose log-det would rerun them.
        return _InverseTransform(self)

    def _call(self, x):
        xs = [x]
        for part in self.parts:
            xs.append(part(xs[-1]))
        self._trajectory = xs
        return xs[-1]

    def _inverse(self, y):
        ys = [y]
        for part in reversed(self.parts):
            ys.append(part.inv(ys[-1]))
        self._trajectory = ys[::-1]
        return ys[-1]

    def log_abs_det_jacobian(self, x, y):
        xs = self._trajectory
        if xs is None or xs[0] is not x or xs[-1] is not y:
            self._call(x)
            xs = self._trajectory
        self._trajectory = None
        terms, event_dim = [], self.domain.event_dim
        for part, a, b in zip(self.parts, xs[:-1], xs[1:]):
            terms.append(_sum_rightmost(part.log_abs_det_jacobian(a, b), event_dim - part.domain.event_dim))
            event_dim += part.codomain.event_dim - part.domain.event_dim
        return functools.reduce(operator.add, terms)


class FlowModel(DistributionModel, PyroModule):
    """A normalizing flow as a Pyro program: ``x ~ TransformedDistribution(N(0, I), [f.inv])``.

    Args:
        event_shape: the shape of one example.
        transforms: the normalizing map :math:`f` as a list of Pyro
            transforms (``TransformModule``\\ s hold its parameters), applied
            in order to the data.
        num_levels: if given, the data are integer levels ``0..L-1`` and site
            "x" is :class:`UniformDequantization` of the flow (whose support
            must be [0, 1), e.g. starting with a :class:`LogitTransform`).

    Example::

        >>> import torch
        >>> from pyro.distributions.transforms import AffineCoupling
        >>> from pyro.nn import DenseNN
        >>> flow = FlowModel(2, [AffineCoupling(1, DenseNN(1, [8], [1, 1]))])
        >>> flow.sample(3).shape
        torch.Size([3, 2])
        >>> flow.log_prob(torch.zeros(1, 2)).shape
        torch.Size([1])
    """

    def __init__(self, event_shape, transforms, num_levels: int | None = None):
        super().__init__()
        self.event_shape = as_event_shape(event_shape)
        self.num_levels = num_levels
        if not transforms:
            raise ValueError("transforms: expected at least one transform, got none")
        self.flow = SequentialFlow(list(transforms))
        self.register_buffer("base_loc", torch.zeros(self.event_shape))
        self.register_buffer("base_scale", torch.ones(self.event_shape))

    def distribution(self, n: int | None = None):
        """p(x): the base N(0, I) pushed through :math:`f^{-1}`; batch shape ``(n,)``."""
        base = dist.Normal(self.base_loc, self.base_scale).to_event(len(self.event_shape))
        if n is not None:
            base = base.expand([n])
        flow = dist.TransformedDistribution(base, [self.flow.inv])
        return flow if self.num_levels is None else UniformDequantization(flow, self.num_levels)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats, one number per example (the program's site "x" scored on ``x``)."""
        return site_log_prob(self.model, x)



"""Masked autoregressive flows: MAF for density estimation (Papamakarios et al., 2017)."""

from __future__ import annotations

import torch
from pyro.distributions.transforms import AffineAutoregressive, BatchNorm
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import AutoRegressiveNN

from ...registry import register_model
from .core import FlowModel, ScoredOnce
from .dequantization import LogitTransform
from .nice import _flat_dim, _logit_for
from ...checks import count, widths

__all__ = ["MaskedAffineAutoregressive", "NormalizingBatchNorm", "MAF"]


class MaskedAffineAutoregressive(ScoredOnce, AffineAutoregressive):
    """One MAF layer: Pyro's :class:`~pyro.distributions.transforms.AffineAutoregressive`
    with a MADE (:class:`~pyro.nn.AutoRegressiveNN`), without its stale (x, y) cache.

    In the normalizing direction (data :math:`x` to noise :math:`u`),

    .. math:: u_i = (x_i - \\mu_i(x_{<i})) \\exp(-\\alpha_i(x_{<i})), \\qquad
              \\log\\left|\\det \\frac{\\partial u}{\\partial x}\\right| = -\\sum_i \\alpha_i(x_{<i})

    (Papamakarios et al., 2017, eq. 3-5; Pyro parametrizes
    :math:`\\exp(-\\alpha) = \\sigma` and :math:`-\\mu/\\sigma` as its mean).
    Scoring data costs one pass of the MADE; sampling costs D passes.

    Example::

        >>> import torch
        >>> t = MaskedAffineAutoregressive(AutoRegressiveNN(3, [8]))
        >>> x = torch.randn(2, 3)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
        True

    Reference: G. Papamakarios, T. Pavlakou, I. Murray. Masked Autoregressive
    Flow for Density Estimation. NeurIPS 2017, arXiv:1705.07057.
    """

    def _inverse(self, y):
        # Pyro's own inverse starts from float32 zeros whatever y's dtype; this one keeps y's.
        cols = [y.new_zeros(y.shape[:-1])] * y.shape[-1]
        for idx in self.arn.permutation.tolist():
            mean, log_scale = self.arn(torch.stack(cols, dim=-1))
            log_scale = clamp_preserve_gradients(log_scale, self.log_scale_min_clip, self.log_scale_max_clip)
            cols[idx] = (y[..., idx] - mean[..., idx]) * (-log_scale[..., idx]).exp()
        x = torch.stack(cols, dim=-1)
        self._cached_log_scale = log_scale
        self._cached_x_y = x, y
        return x


class NormalizingBatchNorm(BatchNorm):
    """Pyro's :class:`~pyro.distributions.transforms.BatchNorm` turned around, for a normalizing flow.

    Pyro's BatchNorm is written in the sampling direction (noise to data),
    and normalizes with batch statistics in its *inverse*. A flow here is
    written data to noise, so this transform's forward is BatchNorm's inverse
    (batch mean and variance in training, the moving averages in eval):

    .. math:: u = \\gamma \\frac{x - \\mu_B}{\\sqrt{\\sigma_B^2 + \\epsilon}} + \\beta, \\qquad
              \\log\\left|\\frac{\\partial u}{\\partial x}\\right| = \\sum_i \\log\\gamma_i - \\tfrac12 \\log(\\sigma^2_{B,i} + \\epsilon)

    (Papamakarios et al., 2017, sec. 3.4). ``BatchNorm(dim).inv`` would do the
    same arithmetic, but it is a torch ``_InverseTransform``, not a module:
    a module list skips it, so its parameters and running statistics would be
    neither trained, saved nor switched to eval.

    Example::

        >>> import torch
        >>> bn = NormalizingBatchNorm(2).eval()
        >>> x = torch.randn(4, 2)
        >>> torch.allclose(bn.inv(bn(x)), x, atol=1e-5)
        True
    """

    def _call(self, x):
        return super()._inverse(x)

    def _inverse(self, y):
        return super()._call(y)

    def log_abs_det_jacobian(self, x, y):
        # BatchNorm's own log-det is log |dx/dy| of its sampling direction, with the variance of the data side.
        return -super().log_abs_det_jacobian(y, x)


class MAF(FlowModel):
    """A masked autoregressive flow of ``num_layers`` MADE layers on vectors of size ``dim``.

    Successive layers reverse the autoregressive order. With ``batch_norm``,
    a :class:`NormalizingBatchNorm` sits between layers (Papamakarios et al.,
    2017, sec. 3.4): trained, saved and switched to eval with the model.

    Example::

        >>> import torch
        >>> flow = MAF(3, num_layers=2, hidden=(16,))
        >>> flow.log_prob(torch.zeros(4, 3)).shape
        torch.Size([4])
    """

    def __init__(self, dim: int, num_layers: int = 5, hidden=(256, 256), batch_norm: bool = False,
                 logit: float | None = None):
        count("dim", dim, 2)
        count("num_layers", num_layers)
        hidden = widths("hidden", hidden)
        order = torch.arange(dim)
        parts = [LogitTransform(logit)] if logit is not None else []
        for i in range(num_layers):
            if batch_norm and i > 0:
                parts.append(NormalizingBatchNorm(dim))
            perm = order if i % 2 == 0 else order.flip(0)
            parts.append(MaskedAffineAutoregressive(AutoRegressiveNN(dim, list(hidden), permutation=perm)))
        super().__init__(dim, parts)


@register_model("maf", family="flow", data_kinds=("continuous", "points"),
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 128},
                description="masked autoregressive flow (MADE layers, reversed orders)")
def _build_maf(event_shape, data_kind, num_layers=5, hidden=(256, 256), **options):
    return MAF(_flat_dim(event_shape), num_layers, hidden, logit=_logit_for(data_kind))

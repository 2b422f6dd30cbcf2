"""Invertible residual networks (Behrmann et al., 2019).

A residual block :math:`F(x) = x + g(x)` is invertible when
:math:`\\mathrm{Lip}(g) < 1`: spectral normalization of each linear layer
(Miyato et al., 2018) times a coefficient :math:`c < 1`, with 1-Lipschitz
activations (ELU), gives :math:`\\mathrm{Lip}(g) \\le c`. Then

* the inverse is the fixed point of :math:`x \\leftarrow y - g(x)` (Banach;
  the error shrinks by :math:`c` per iteration), and
* :math:`\\log|\\det(I + J_g)| = \\sum_{k \\ge 1} \\frac{(-1)^{k+1}}{k} \\mathrm{tr}(J_g^k)`
  (eq. 6), truncated after ``num_terms`` terms with each trace estimated by
  Hutchinson's :math:`\\mathrm{tr}(A) = \\mathbb{E}_v[v^\\top A v]`, :math:`v \\sim N(0, I)`,
  using vector-Jacobian products :math:`v^\\top J_g^k`.
"""

from __future__ import annotations

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from torch import nn
from torch.nn.utils import parametrize

from ...registry import register_model
from .core import FlowModel
from .dequantization import LogitTransform
from .glow import ActNorm
from .nice import _flat_dim, _logit_for
from ...checks import count, widths
from ...deprecation import renamed, renamed_attribute
from ...nets import mlp

__all__ = ["InvertibleResidual", "IResNet"]

LOG_DETS = ("auto", "series", "exact")


class InvertibleResidual(TransformModule):
    """An i-ResNet block :math:`y = x + c\\, g(x)` on vectors, :math:`\\mathrm{Lip}(c\\, g) \\le c < 1`.

    Args:
        dim: the size of x.
        hidden: hidden widths of g (spectral-normalized linear layers, ELU).
        coeff: the Lipschitz bound c, in (0, 1).
        log_det: "series" (the truncated power series with Hutchinson
            traces: stochastic, cost ``num_terms`` vector-Jacobian products),
            "exact" (``slogdet`` of the Jacobian, through the last hidden
            width w when w < dim: see :meth:`exact_log_det`), or "auto": series while the module
            is training, exact in eval mode (so reported likelihoods are exact).
        num_terms: terms of the power series (deprecated name ``n_terms``).
        num_projections: Hutchinson probe vectors per estimate (deprecated name ``n_samples``).
        max_iter, atol: the fixed-point inverse stops after ``max_iter``
            iterations or when no coordinate moves more than ``atol``.

    Example::

        >>> import torch
        >>> t = InvertibleResidual(2, hidden=(16,), log_det="exact").eval()
        >>> x = torch.randn(5, 2)
        >>> bool((t.inv(t(x)) - x).abs().max() < 1e-4)
        True

    Reference: J. Behrmann, W. Grathwohl, R. T. Q. Chen, D. Duvenaud,
    J.-H. Jacobsen. Invertible Residual Networks. ICML 2019, arXiv:1811.00995.
    """

    domain = constraints.independent(constraints.real, 1)
    codomain = constraints.independent(constraints.real, 1)
    bijective = True

    n_terms = renamed_attribute("num_terms", "n_terms")
    n_samples = renamed_attribute("num_projections", "n_samples")

    @renamed(n_terms="num_terms", n_samples="num_projections")
    def __init__(self, dim: int, hidden=(64, 64), coeff: float = 0.9, log_det: str = "auto",
                 num_terms: int = 8, num_projections: int = 1, n_power_iterations: int = 5,
                 max_iter: int = 100, atol: float = 1e-6):
        super().__init__(cache_size=0)
        count("dim", dim)
        if not 0.0 < float(coeff) < 1.0:
            raise ValueError(f"coeff: expected a number in (0, 1) so the block is invertible, got {coeff!r}")
        if log_det not in LOG_DETS:
            raise ValueError(f"log_det: expected one of {LOG_DETS}, got {log_det!r}")
        for name, value in (("num_terms", num_terms), ("num_projections", num_projections), ("max_iter", max_iter)):
            count(name, value)
        self.net = mlp((dim, *widths("hidden", hidden), dim), nn.ELU, spectral_norm=True,
                       n_power_iterations=n_power_iterations)
        self.coeff, self.log_det, self.num_terms, self.num_projections = (
            float(coeff), log_det, num_terms, num_projections)
        self.max_iter, self.atol = max_iter, atol

    def g(self, x):
        """The residual branch c * g(x)."""
        return self.coeff * self.net(x)

    _last = None

    def _call(self, x):
        # g(x) is kept with its graph so that the series log-det of this very pass
        # reuses it: in training mode every evaluation of g runs one more power
        # iteration of the spectral norm, so a second g(x) would be another function.
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_()
            gx = self.g(xg)
        self._last = x, xg, gx
        return x + gx

    def _inverse(self, y):
        x = y
        with torch.no_grad():
            for _ in range(self.max_iter):
                new = y - self.g(x)
                done = bool((new - x).abs().max() <= self.atol)
                x = new
                if done:
                    break
        return y - self.g(x)

    def log_abs_det_jacobian(self, x, y):
        exact = self.log_det == "exact" or (self.log_det == "auto" and not self.training)
        graph = torch.is_grad_enabled()
        last, self._last = self._last, None
        with torch.enable_grad():
            if exact:
                xg = x if x.requires_grad else x.detach().requires_grad_()
                out = self.exact_log_det(xg, graph)
            elif last is not None and last[0] is x:
                out = self.series_log_det(last[1], graph, gx=last[2])
            else:
                xg = x if x.requires_grad else x.detach().requires_grad_()
                out = self.series_log_det(xg, graph)
        return out if graph else out.detach()

    def exact_log_det(self, x, create_graph: bool = False):
        """log|det(I + J_g(x))|, exactly.

        g ends in a linear layer W (dim x w) after the hidden features h(x), so
        J_g = c W J_h with J_h of size w x dim, and Sylvester's identity
        det(I_dim + c W J_h) = det(I_w + c J_h W) leaves a w x w determinant
        and w backward rows instead of dim: on 3x32x32 images with w = 128,
        that is 24 times fewer rows and a 128^3 instead of a 3072^3 slogdet.
        """
        *inner, last = self.net
        if last.in_features >= x.shape[-1]:
            return self._jacobian_log_det(self.g, x, create_graph)
        with parametrize.cached():  # one spectral-norm weight for h and W, as in a single pass of g
            w = self.coeff * last.weight
            return self._jacobian_log_det(nn.Sequential(*inner), x, create_graph, right=w)

    @staticmethod
    def _jacobian_log_det(fn, x, create_graph, right=None):
        """log|det(I + J_fn(x) @ right)| (``right`` None: the identity), one Jacobian row per output of fn."""
        batch, d = x.shape[:-1], x.shape[-1]
        rows = d if right is None else right.shape[1]
        xr = x.reshape(-1, 1, d).expand(-1, rows, d)
        out = fn(xr)  # (N, rows, rows): row i is fn(x_n), used for output i
        eye = torch.eye(rows, dtype=x.dtype, device=x.device)
        (jac,) = torch.autograd.grad((out * eye).sum(), xr, create_graph=create_graph)
        return torch.linalg.slogdet(eye + (jac if right is None else jac @ right)).logabsdet.reshape(batch)

    def series_log_det(self, x, create_graph: bool = False, gx=None):
        """The truncated power series with Hutchinson traces (an unbiased estimate of the truncated sum).

        ``gx`` is ``g(x)`` already computed from ``x`` (which must require grad), or None.
        """
        gx = self.g(x) if gx is None else gx
        total = x.new_zeros(x.shape[:-1])
        for _ in range(self.num_projections):
            v = torch.randn_like(x)
            w = v
            for k in range(1, self.num_terms + 1):
                (w,) = torch.autograd.grad(gx, x, w, retain_graph=True, create_graph=create_graph)
                total = total + (-1) ** (k + 1) / k * (w * v).sum(-1)
        return total / self.num_projections

    def lipschitz_bound(self) -> float:
        """c times the product of the exact spectral norms of g's weights (should be < 1)."""
        bound = self.coeff
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                bound *= float(torch.linalg.matrix_norm(layer.weight.detach(), 2))
        return bound


class IResNet(FlowModel):
    """An i-ResNet flow on vectors: ``num_blocks`` x (ActNorm, :class:`InvertibleResidual`).

    Example::

        >>> import torch
        >>> flow = IResNet(2, num_blocks=2, hidden=(8,))
        >>> flow.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    def __init__(self, dim: int, num_blocks: int = 4, hidden=(64, 64), coeff: float = 0.9, logit: float | None = None,
                 **block_options):
        count("dim", dim)
        count("num_blocks", num_blocks)
        parts = [LogitTransform(logit)] if logit is not None else []
        for _ in range(num_blocks):
            parts += [ActNorm(dim, event_dim=1), InvertibleResidual(dim, hidden, coeff, **block_options)]
        super().__init__(dim, parts)


@register_model("iresnet", family="flow", data_kinds=("continuous", "points"),
                fit_defaults={"lr": 1e-3, "epochs": 100, "batch_size": 128},
                description="invertible residual network (spectral norm, power-series log-det)")
def _build_iresnet(event_shape, data_kind, num_blocks=4, hidden=(64, 64), **options):
    return IResNet(_flat_dim(event_shape), num_blocks, hidden, logit=_logit_for(data_kind))

"""The distribution at site "x" of an autoregressive model, and its per-dimension outputs.

An autoregressive model factorizes a density over D dimensions by the chain
rule along an ordering :math:`o = (o_1, \\dots, o_D)`:

.. math:: p_\\theta(x) = \\prod_{d=1}^{D} p_\\theta(x_{o_d} \\mid x_{o_{<d}}),

where a network maps :math:`x_{o_{<d}}` to the parameters of the conditional
of :math:`x_{o_d}`. :class:`AutoregressiveDistribution` turns such a model
into a ``TorchDistribution``: ``log_prob`` is the exact sum of the D
conditionals (one network pass), ``sample`` is ancestral (D passes, one
dimension after the other).

The conditionals ("outputs") are small objects with ``num_params`` numbers
per dimension (Larochelle and Murray, 2011; Salimans et al., 2017; Bishop,
1994):

* :class:`BernoulliOutput` for binary data (1 logit),
* :class:`CategoricalOutput` over L grey levels (L logits),
* :class:`LogisticMixtureOutput`, the discretized mixture of K logistics of
  PixelCNN++ over L levels (3K numbers),
* :class:`GaussianMixtureOutput`, a mixture of K Gaussians for real values (3K numbers).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints
from torch.nn import functional as F
from ..checks import count

__all__ = ["AutoregressiveDistribution", "DiscretizedLogisticMixture", "BernoulliOutput", "CategoricalOutput",
           "LogisticMixtureOutput", "GaussianMixtureOutput", "make_output", "OUTPUTS"]

#: Smallest scale of a logistic or Gaussian component, so densities stay finite.
MIN_SCALE = 1e-2


class DiscretizedLogisticMixture(TorchDistribution):
    """A mixture of K logistics discretized to the integer levels 0, ..., L-1.

    Level k owns the bin :math:`[k - 1/2, k + 1/2]`, and the end levels own
    the tails (Salimans et al., 2017, "PixelCNN++", eq. 2):

    .. math:: P(x = k) = \\sum_{m=1}^{K} \\pi_m \\left[\\sigma\\left(\\frac{k + 1/2 - \\mu_m}{s_m}\\right)
              - \\sigma\\left(\\frac{k - 1/2 - \\mu_m}{s_m}\\right)\\right],

    with :math:`\\sigma(+\\infty)` at k = L-1 and :math:`\\sigma(-\\infty)` at k = 0, so the L
    probabilities sum to one. The log of a difference of sigmoids is computed as
    :math:`\\log\\sigma(a) + \\log\\sigma(-b) + \\log(1 - e^{b-a})`, stable in both tails.

    Args:
        logits: mixture weights' logits, shape ``(..., K)``.
        loc: :math:`\\mu_m` in level units, shape ``(..., K)``.
        scale: :math:`s_m > 0` in level units, shape ``(..., K)``.
        num_levels: L.

    Example::

        >>> d = DiscretizedLogisticMixture(torch.zeros(2), torch.tensor([1.0, 3.0]), torch.ones(2), 5)
        >>> round(float(d.log_prob(torch.arange(5.0)).exp().sum()), 6)
        1.0
    """

    arg_constraints = {"logits": constraints.real, "loc": constraints.real, "scale": constraints.positive}

    def __init__(self, logits, loc, scale, num_levels, validate_args=None):
        self.num_levels = count("num_levels", num_levels, 2)
        self.logits, self.loc, self.scale = torch.broadcast_tensors(logits, loc, scale)
        super().__init__(self.logits.shape[:-1], validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return constraints.integer_interval(0, self.num_levels - 1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        k = value.unsqueeze(-1)
        upper = (k + 0.5 - self.loc) / self.scale
        lower = (k - 0.5 - self.loc) / self.scale
        top, bottom = k >= self.num_levels - 1, k <= 0
        lp = (torch.where(top, 0.0, F.logsigmoid(upper)) + torch.where(bottom, 0.0, F.logsigmoid(-lower))
              + torch.where(top | bottom, 0.0, torch.log(-torch.expm1(-1.0 / self.scale))))
        return torch.logsumexp(torch.log_softmax(self.logits, -1) + lp, -1)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            m = dist.Categorical(logits=self.logits).sample(sample_shape).unsqueeze(-1)
            loc, scale = (t.expand(*shape, t.shape[-1]).gather(-1, m).squeeze(-1) for t in (self.loc, self.scale))
            u = torch.rand(shape, dtype=loc.dtype, device=loc.device).clamp(1e-6, 1 - 1e-6)
            x = loc + scale * (torch.log(u) - torch.log1p(-u))
            return x.round().clamp(0, self.num_levels - 1)


class BernoulliOutput:
    """One logit per dimension: :math:`p(x_d = 1 \\mid x_{<d}) = \\sigma(a_d)`.

    The network's output is a logit, never a probability: it is scored by
    ``Bernoulli(logits=a)``, so the sigmoid is applied exactly once.
    """

    num_params = 1
    support = constraints.boolean

    def encode(self, x):
        return x

    def distribution(self, params):
        return dist.Bernoulli(logits=params[..., 0])

    def __repr__(self):
        return "BernoulliOutput()"


class CategoricalOutput:
    """L logits per dimension: a categorical over the levels 0, ..., L-1 (values given as floats).

    The network sees the levels rescaled to [-1, 1].
    """

    def __init__(self, num_levels: int):
        self.num_levels = count("num_levels", num_levels, 2)
        self.num_params = num_levels
        self.support = constraints.integer_interval(0, num_levels - 1)

    def encode(self, x):
        return 2.0 * x / (self.num_levels - 1) - 1.0

    def distribution(self, params):
        return _FloatCategorical(logits=params)

    def __repr__(self):
        return f"CategoricalOutput(num_levels={self.num_levels})"


class _FloatCategorical(dist.Categorical):
    """A categorical whose values are float levels, like the data."""

    def log_prob(self, value):
        return super().log_prob(value.long())

    def sample(self, sample_shape=torch.Size()):
        return super().sample(sample_shape).to(self.logits.dtype)


class LogisticMixtureOutput:
    """3K numbers per dimension: a :class:`DiscretizedLogisticMixture` over L levels.

    The raw outputs :math:`(w, u, r)` give :math:`\\pi = \\mathrm{softmax}(w)`,
    :math:`\\mu = (L-1)(1 + u)/2` and :math:`s = (L-1)\\,\\mathrm{softplus}(r)/2 + 10^{-2}`: like
    :math:`\\mu`, the scale is measured on the encoded range [-1, 1] (as in PixelCNN++), so at
    initialisation the logistics spread over all L levels whatever L is (at L = 256 a scale of
    one level would start near 50 nats per dimension instead of log 256 = 5.5).
    """

    def __init__(self, num_levels: int, num_components: int = 5):
        self.num_levels = count("num_levels", num_levels, 2)
        self.num_components = count("num_components", num_components, 1)
        self.num_params = 3 * num_components
        self.support = constraints.integer_interval(0, num_levels - 1)

    def encode(self, x):
        return 2.0 * x / (self.num_levels - 1) - 1.0

    def distribution(self, params):
        w, u, r = params.chunk(3, -1)
        half = (self.num_levels - 1) / 2.0
        return DiscretizedLogisticMixture(w, half * (1.0 + u), half * F.softplus(r) + MIN_SCALE, self.num_levels)

    def __repr__(self):
        return f"LogisticMixtureOutput(num_levels={self.num_levels}, num_components={self.num_components})"


class GaussianMixtureOutput:
    """3K numbers per dimension: :math:`\\sum_k \\pi_k\\, \\mathcal{N}(x_d; \\mu_k, \\sigma_k^2)` for real values.

    The raw outputs :math:`(w, \\mu, r)` give :math:`\\pi = \\mathrm{softmax}(w)` and
    :math:`\\sigma = \\mathrm{softplus}(r) + 10^{-2}`; the K means start spread over [-1, 1].
    """

    support = constraints.real

    def __init__(self, num_components: int = 5):
        self.num_components = count("num_components", num_components, 1)
        self.num_params = 3 * num_components

    def encode(self, x):
        return x

    def distribution(self, params):
        w, loc, r = params.chunk(3, -1)
        spread = torch.linspace(-1.0, 1.0, self.num_components, dtype=loc.dtype, device=loc.device)
        components = dist.Normal(loc + spread, F.softplus(r) + MIN_SCALE)
        return dist.MixtureSameFamily(dist.Categorical(logits=w), components)

    def __repr__(self):
        return f"GaussianMixtureOutput(num_components={self.num_components})"


OUTPUTS = ("bernoulli", "categorical", "logistic_mixture", "gaussian_mixture")


def make_output(output: str = "bernoulli", num_levels: int | None = None, num_components: int = 5):
    """The conditional named ``output`` (one of :data:`OUTPUTS`).

    Example::

        >>> make_output("logistic_mixture", num_levels=17, num_components=3).num_params
        9
    """
    if output == "bernoulli":
        return BernoulliOutput()
    if output == "gaussian_mixture":
        return GaussianMixtureOutput(num_components)
    if output in ("categorical", "logistic_mixture"):
        if num_levels is None:
            raise ValueError(f"num_levels: output {output!r} needs the number of grey levels, got None")
        if output == "categorical":
            return CategoricalOutput(num_levels)
        return LogisticMixtureOutput(num_levels, num_components)
    raise ValueError(f"output: expected one of {OUTPUTS}, got {output!r}")


class AutoregressiveDistribution(TorchDistribution):
    """An exact-likelihood distribution defined by a log density and an ancestral sampler.

    Args:
        log_prob_fn: ``x (n, *event_shape) -> log p(x)`` of shape ``(n,)``,
            the chain rule summed over the ordering.
        sample_fn: ``n -> x`` of shape ``(n, *event_shape)``, drawn dimension by
            dimension along the same ordering.
        event_shape: the shape of one example.
        batch_shape: ``(n,)``, the size of the ``pyro.plate("data", n)``.
        support: the support of one dimension (``constraints.boolean``,
            ``integer_interval(0, L-1)`` or ``real``).

    The models of :mod:`pyro_dgm.models.autoregressive` build it in their
    ``distribution(n)`` method; ``sample`` draws ``n`` examples (only an empty
    ``sample_shape`` is supported, as one plate holds the batch).

    Example::

        >>> import math, torch
        >>> d = AutoregressiveDistribution(lambda x: torch.full(x.shape[:1], -2 * math.log(2.0)),
        ...                                lambda n: torch.bernoulli(torch.full((n, 2), 0.5)),
        ...                                torch.Size([2]), torch.Size([3]), constraints.boolean)
        >>> d.log_prob(torch.ones(3, 2)).exp()
        tensor([0.2500, 0.2500, 0.2500])
        >>> d.sample().shape
        torch.Size([3, 2])
    """

    arg_constraints = {}
    has_rsample = False

    def __init__(self, log_prob_fn, sample_fn, event_shape, batch_shape, support, validate_args=None):
        self._log_prob_fn, self._sample_fn, self._support = log_prob_fn, sample_fn, support
        super().__init__(torch.Size(batch_shape), torch.Size(event_shape), validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return constraints.independent(self._support, len(self.event_shape))

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        flat = value.reshape(-1, *self.event_shape)
        return self._log_prob_fn(flat).reshape(value.shape[:value.dim() - len(self.event_shape)])

    def sample(self, sample_shape=torch.Size()):
        if torch.Size(sample_shape) != torch.Size():
            raise ValueError(f"sample_shape: an autoregressive distribution draws its batch only, got {sample_shape}")
        n = math.prod(self.batch_shape)
        with torch.no_grad():
            return self._sample_fn(n).reshape(self.batch_shape + self.event_shape)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) == self.batch_shape:
            return self
        raise ValueError(f"batch_shape: cannot expand an autoregressive distribution of batch "
                         f"{tuple(self.batch_shape)} to {tuple(batch_shape)}")

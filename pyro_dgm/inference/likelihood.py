"""Maximum likelihood and the ELBO: the objectives of models with a density."""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from .checks import check_program_on_batch
from .objective import Objective, latent_sites, modules_of, sample_sites

__all__ = ["MaximumLikelihood", "ELBO", "AnalyticKLEstimator"]


class MaximumLikelihood(Objective):
    """Average negative log-likelihood, in nats per example.

    .. math:: \\mathcal{L}(\\theta) = -\\frac{1}{B}\\sum_{b=1}^{B} \\log p_\\theta(x_b)

    The model must have no latent sample sites: every sample site is observed
    (site ``"x"`` at least). For models with latents, use :class:`ELBO`.

    Example::

        >>> import torch, pyro_dgm
        >>> from pyro_dgm.models import FactorizedBernoulli
        >>> m = FactorizedBernoulli(4)
        >>> x = torch.bernoulli(torch.full((32, 4), 0.3))
        >>> r = pyro_dgm.fit(m.model, None, x, objective=pyro_dgm.inference.MaximumLikelihood(), steps=3, progress=False)
        >>> len(r.losses["model"])
        3
    """

    def setup(self, model, guide, batch):
        super().setup(model, guide, batch)
        trace = check_program_on_batch(model, batch)
        latent = latent_sites(trace)
        if latent:
            raise ValueError(
                f"objective: MaximumLikelihood needs a model without latent sites, "
                f"but the model samples {latent}; give a guide and use ELBO"
            )

    def loss(self, group, batch):
        trace = poutine.trace(self.model).get_trace(batch)
        return -trace.log_prob_sum() / batch.shape[0]


def _all_kl_analytic(model, guide, batch) -> bool:
    guide_trace = poutine.trace(guide).get_trace(batch)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch)
    for name in latent_sites(guide_trace):
        site = guide_trace.nodes[name]
        try:
            torch.distributions.kl_divergence(site["fn"], model_trace.nodes[name]["fn"])
        except NotImplementedError:
            return False
    return True


def _scaled(value, site):
    if site["mask"] is not None:
        value = value * site["mask"]
    return value.sum() * site["scale"]


class AnalyticKLEstimator:
    """The mean-field ELBO with every KL term in closed form, computed straight from two traces.

    The same estimator as Pyro's ``TraceMeanField_ELBO``: reparametrized
    samples from the guide, ``log p(x|z)`` at observed sites and
    ``-KL(q(z|x) || p(z))`` at latent sites. It is written out here because
    Pyro's version also scores every site and builds score-function terms the
    mean-field case never uses: on the 784-400-20 VAE of
    ``benchmarks/fit_overhead.py`` that costs about 0.7 ms of a 10 ms step.
    ``tests/test_likelihood.py`` checks that both give the same number.
    """

    def __init__(self, num_particles: int = 1):
        self.num_particles = num_particles

    def differentiable_loss(self, model, guide, *args, **kwargs):
        total = 0.0
        for _ in range(self.num_particles):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
            elbo = 0.0
            for name in sample_sites(model_trace):
                site = model_trace.nodes[name]
                if site["is_observed"]:
                    elbo = elbo + _scaled(site["fn"].log_prob(site["value"]), site)
                else:
                    kl = torch.distributions.kl_divergence(guide_trace.nodes[name]["fn"], site["fn"])
                    elbo = elbo - _scaled(kl, site)
            total = total - elbo
        return total / self.num_particles


class ELBO(Objective):
    """Negative evidence lower bound, in nats per example.

    .. math:: -\\mathrm{ELBO} = -\\mathbb{E}_{q_\\phi(z|x)}[\\log p_\\theta(x, z) - \\log q_\\phi(z|x)]

    Estimated by Pyro's ``Trace_ELBO`` with reparametrized samples, or, when
    every latent site has an analytic KL (``analytic_kl=None`` decides this
    from the program on the first batch), with the KL terms in closed form
    (:class:`AnalyticKLEstimator`, the estimator of Pyro's ``TraceMeanField_ELBO``).

    Args:
        num_particles: samples of z per example.
        analytic_kl: force (True) or forbid (False) the closed-form KL.
    """

    def __init__(self, num_particles: int = 1, analytic_kl: bool | None = None):
        if int(num_particles) < 1:
            raise ValueError(f"num_particles: expected an integer >= 1, got {num_particles!r}")
        self.num_particles = int(num_particles)
        self.analytic_kl = analytic_kl

    def setup(self, model, guide, batch):
        if guide is None:
            raise ValueError("guide: ELBO needs a guide q(z|x); got None")
        self.model, self.guide = model, guide
        self._modules = modules_of(model, guide)
        check_program_on_batch(model, batch)
        analytic = self.analytic_kl
        if analytic is None:
            analytic = _all_kl_analytic(model, guide, batch)
        cls = AnalyticKLEstimator if analytic else Trace_ELBO
        self.estimator = cls(num_particles=self.num_particles)
        self.uses_analytic_kl = bool(analytic)

    def loss(self, group, batch):
        return self.estimator.differentiable_loss(self.model, self.guide, batch) / batch.shape[0]

    def __repr__(self):
        return f"ELBO(num_particles={self.num_particles}, analytic_kl={self.analytic_kl})"

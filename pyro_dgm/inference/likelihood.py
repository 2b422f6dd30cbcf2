"""Maximum likelihood and the ELBO: the objectives of models with a density."""

from __future__ import annotations

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import Trace_ELBO

from ..checks import check_program_on_batch
from .objective import Objective, latent_sites, sample_sites

__all__ = ["MaximumLikelihood", "ELBO", "PyroELBO", "AnalyticKLEstimator", "refuse_unnormalized"]


def refuse_unnormalized(fn, who: str) -> None:
    """A ValueError when the data site holds a density known only up to log Z (an EBM)."""
    from ..distributions import UnnormalizedDistribution

    if isinstance(fn, UnnormalizedDistribution):
        raise ValueError(
            f"{who}: the data site holds an unnormalized density (log Z unknown), which maximum likelihood "
            "cannot train; use ContrastiveDivergence, PersistentContrastiveDivergence, "
            "NoiseContrastiveEstimation, FlowContrastiveEstimation or ScoreMatching (pyro_dgm.inference)")


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
        trace = check_program_on_batch(model, batch, self.site, self.args)
        refuse_unnormalized(trace.nodes[self.site]["fn"], "objective")
        _refuse_without_inverse(trace.nodes[self.site])
        latent = latent_sites(trace)
        if latent:
            raise ValueError(
                f"objective: MaximumLikelihood needs a model without latent sites, "
                f"but the model samples {latent}; give a guide and use ELBO"
            )

    def loss(self, group, batch):
        with self.scaled():
            trace = self.trace(self.model, batch)
        return -trace.log_prob_sum() / self.examples(batch)


def _refuse_without_inverse(site):
    """A ValueError for a flow whose transforms cannot invert data (Pyro's planar and radial flows compute
    x -> z only for the z they drew themselves, so log p(data) has no value; Pyro raises a KeyError)."""
    try:
        site["fn"].log_prob(site["value"])
    except KeyError as err:
        if "intermediates cache" not in str(err):
            raise
        raise ValueError(f"model: the flow at site {site['name']!r} has a transform without an inverse ({err}): "
                         "the density of data cannot be computed, so it cannot be trained by maximum likelihood; "
                         "use an invertible one (affine_coupling, spline_coupling, affine_autoregressive, ...) or "
                         "put it in a guide, where Pyro only scores its own samples") from None


def _kl_not_analytic(model, guide, batch, args=()) -> str | None:
    """Why the closed-form KL cannot give this program's ELBO; None when it can."""
    guide_trace = poutine.trace(guide).get_trace(batch, *args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch, *args)
    unguided = [name for name in latent_sites(model_trace) if name not in guide_trace.nodes]
    if unguided:  # drawn from the prior by replay: Trace_ELBO scores them, as SVI does
        return f"the model's latent site(s) {unguided} are not in the guide"
    for name in latent_sites(guide_trace):
        site = guide_trace.nodes[name]
        if name not in model_trace.nodes:  # an autoguide's auxiliary site: not mean-field
            return f"the guide's site {name!r} is not in the model"
        try:
            torch.distributions.kl_divergence(site["fn"], model_trace.nodes[name]["fn"])
        except NotImplementedError:
            return f"torch has no closed-form KL for site {name!r}"
    return None


def _scaled(value, site):
    # Pyro's own rule: a tensor scale (poutine.scale per example) multiplies elementwise, then sum.
    return scale_and_mask(value, site["scale"], site["mask"]).sum()


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
        check_program_on_batch(model, batch, self.site, self.args)
        super().setup(model, guide, batch)
        analytic = self.analytic_kl
        if analytic is not False:
            reason = _kl_not_analytic(model, guide, batch, self.args)
            if reason is not None and analytic:
                raise ValueError(f"analytic_kl=True: {reason}; leave analytic_kl=None to estimate the KL by sampling")
            analytic = reason is None
        cls = AnalyticKLEstimator if analytic else Trace_ELBO
        self.estimator = cls(num_particles=self.num_particles)
        self.uses_analytic_kl = bool(analytic)

    def loss(self, group, batch):
        with self.scaled():
            loss = self.estimator.differentiable_loss(self.model, self.guide, batch, *self.args)
        return loss / self.examples(batch)

    def __repr__(self):
        return f"ELBO(num_particles={self.num_particles}, analytic_kl={self.analytic_kl})"


class PyroELBO(Objective):
    """One of Pyro's own ELBO objects as an objective: ``fit(..., objective=pyro.infer.Trace_ELBO())``.

    ``fit`` wraps any ``pyro.infer.ELBO`` in this. ELBOs with a
    ``differentiable_loss`` (Trace_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO)
    return it; the others (TraceGraph_ELBO, RenyiELBO) only offer
    ``loss_and_grads``, which computes the gradients itself, so ``fit`` then
    skips its own ``backward`` (``backward_inside``). The loss and those
    gradients are divided by the number of examples afterwards, so the loss
    is per example like :class:`ELBO`'s and ``RenyiELBO`` trains its own bound.

    Example::

        >>> import pyro, torch, pyro_dgm
        >>> from pyro_dgm.models import VAE
        >>> vae = VAE(8, latent_dim=2, hidden=(16,))
        >>> r = pyro_dgm.fit(vae.model, vae.guide, torch.bernoulli(torch.rand(32, 8)),
        ...                  objective=pyro.infer.TraceGraph_ELBO(), steps=2, progress=False)
        >>> type(r.objective).__name__, len(r.losses["model"])
        ('PyroELBO', 2)
    """

    def __init__(self, elbo):
        self.elbo = elbo
        self.backward_inside = not callable(getattr(elbo, "differentiable_loss", None))

    def setup(self, model, guide, batch):
        if guide is None:
            raise ValueError(f"guide: {type(self.elbo).__name__} needs a guide; got None")
        check_program_on_batch(model, batch, self.site, self.args)
        super().setup(model, guide, batch)

    def loss(self, group, batch):
        # Per example by dividing the ELBO's loss and gradients by the count afterwards, not by running the
        # programs under poutine.scale(1 / N): RenyiELBO (IWAE at alpha=0) takes a log-mean-exp of the
        # log-weights, so scaling them inside would train a different bound (at 1/N, about the plain ELBO).
        count = self.examples(batch)
        with self.scaled():
            if not torch.is_grad_enabled():  # fit's first, checking pass and validation losses
                return torch.as_tensor(self.elbo.loss(self.model, self.guide, batch, *self.args)) / count
            if not self.backward_inside:
                return self.elbo.differentiable_loss(self.model, self.guide, batch, *self.args) / count
            loss = torch.as_tensor(self.elbo.loss_and_grads(self.model, self.guide, batch, *self.args))
        with torch.no_grad():
            for p in {id(p): p for m in self._modules for p in m.parameters() if p.grad is not None}.values():
                p.grad.div_(count)
        return loss / count

    def __repr__(self):
        return f"PyroELBO({type(self.elbo).__name__})"

"""Adversarial objectives: a generator program against a critic module.

The generator is a Pyro program whose data site ``"x"`` is ``G_theta(z)``
(see :mod:`pyro_dgm.models.gan`); the critic is a plain ``nn.Module``
``V_omega(x) -> (N,)``. :class:`Adversarial` owns two parameter groups,
``"critic"`` and ``"generator"``; :func:`pyro_dgm.fit` steps the critic on every
batch and the generator on every ``n_critic``-th, each with its own optimizer
(``steps`` counts batches, ``FitResult.updates`` each player's updates).
With P the data and Q the generator's distribution, the losses are:

* ``"minimax"``: the critic minimizes
  :math:`-\\mathbb{E}_P \\log D(x) - \\mathbb{E}_Q \\log(1 - D(x))`, the generator
  :math:`\\mathbb{E}_Q \\log(1 - D(x))`;
* ``"ns"``: the same critic, the generator :math:`-\\mathbb{E}_Q \\log D(x)`;
* ``"f-gan"``: the critic minimizes :math:`-F = -\\mathbb{E}_P T(x) + \\mathbb{E}_Q f^*(T(x))`,
  the generator :math:`-\\mathbb{E}_Q f^*(T(x))` (so it minimizes F), or with
  ``nonsaturating=True`` :math:`-\\mathbb{E}_Q T(x)`;
* ``"wgan"``: the critic minimizes :math:`\\mathbb{E}_Q V(x) - \\mathbb{E}_P V(x)` with its
  weights clipped to [-c, c], the generator :math:`-\\mathbb{E}_Q V(x)`;
* ``"wgan-gp"``: the same plus :math:`\\lambda\\,\\mathbb{E}_{\\hat x}(\\|\\nabla V(\\hat x)\\|_2 - 1)^2`;
* ``"hinge"``: the critic minimizes :math:`\\mathbb{E}_P[1 - V(x)]_+ + \\mathbb{E}_Q[1 + V(x)]_+`,
  the generator :math:`-\\mathbb{E}_Q V(x)`;

with :math:`D = \\sigma(V)` (Goodfellow et al., 2014), :math:`T = g_f(V)` the
f-GAN output activation and :math:`f^*` the convex conjugate of f (Nowozin et
al., 2016, Table 6; :data:`F_DIVERGENCES`), WGAN (Arjovsky et al., 2017),
WGAN-GP (Gulrajani et al., 2017, :func:`gradient_penalty`) and the hinge loss
(Lim and Ye, 2017; Miyato et al., 2018). Every critic but a Wasserstein one
may add the R1 penalty on the data (Mescheder et al., 2018, :func:`r1_penalty`,
``r1_weight=``), which keeps an f-GAN's unbounded critic from running away.

Example::

    >>> import torch, pyro_dgm
    >>> from pyro_dgm.models import MLPGenerator, MLPCritic
    >>> gen, critic = MLPGenerator(2, hidden=(32,)), MLPCritic(2, hidden=(32,))
    >>> obj = Adversarial(critic, loss="wgan-gp", n_critic=2)
    >>> r = pyro_dgm.fit(gen.model, None, torch.randn(256, 2), objective=obj, steps=4, batch_size=64,
    ...                  lr={"generator": 1e-4, "critic": 1e-4}, progress=False)
    >>> len(r.losses["critic"]), len(r.losses["generator"]), sorted(r.terms)
    (4, 2, ['critic/penalty', 'critic/wasserstein'])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..checks import check_batch_shape, count, positive
from ..programs import program_modules, trace_program
from .objective import Objective

__all__ = ["Adversarial", "FDivergence", "F_DIVERGENCES", "gradient_penalty", "r1_penalty", "LOSSES"]

LOSSES = ("minimax", "ns", "f-gan", "wgan", "wgan-gp", "hinge")
_LOG2 = math.log(2.0)


@dataclass(frozen=True)
class FDivergence:
    """An f-divergence :math:`D_f(P\\|Q) = \\int q(x) f(p(x)/q(x))\\,dx` and its variational bound.

    For any critic T with values in the domain of :math:`f^*`,

    .. math:: D_f(P\\|Q) \\ge F(T) = \\mathbb{E}_{x\\sim P}[T(x)] - \\mathbb{E}_{x\\sim Q}[f^*(T(x))],

    with equality at :math:`T^*(x) = f'(p(x)/q(x))` (Nguyen et al., 2010;
    Nowozin et al., 2016, eq. 4-5). A critic's raw output v is mapped into
    the domain by the output activation :math:`T = g_f(v)`.

    Attributes:
        name: the key in :data:`F_DIVERGENCES`.
        f: the generator function f(u), convex with f(1) = 0.
        conjugate: :math:`f^*(t) = \\sup_u\\, t u - f(u)`.
        activation: :math:`g_f(v)`, from the reals into the domain of :math:`f^*`.
        derivative: :math:`f'(u)`, which gives the optimal critic.
        conjugate_activation: :math:`f^*(g_f(v))` in closed form, finite for
            every finite v (composing the two overflows or hits log 0 once
            |v| is large: for reverse KL, :math:`g_f(v) = -e^{-v}` rounds to 0).

    Example::

        >>> import torch
        >>> kl = F_DIVERGENCES["kl"]
        >>> round(float(kl.bound(torch.zeros(3), torch.zeros(3))), 4)  # T = 0: E_P 0 - E_Q exp(-1)
        -0.3679
    """

    name: str
    f: Callable
    conjugate: Callable
    activation: Callable
    derivative: Callable
    conjugate_activation: Callable

    def bound(self, t_p: torch.Tensor, t_q: torch.Tensor) -> torch.Tensor:
        """F = mean of T over samples of P minus mean of f*(T) over samples of Q."""
        return t_p.mean() - self.conjugate(t_q).mean()


def _js_f(u):
    return -(u + 1) * torch.log((1 + u) / 2) + u * torch.log(u)


def _gan_f(u):
    return u * torch.log(u) - (u + 1) * torch.log(u + 1)


#: The f-divergences of Nowozin et al. (2016, Tables 1 and 6): "kl", "reverse-kl",
#: "pearson" (chi-squared), "hellinger" (squared Hellinger), "tv" (total variation),
#: "js" and "gan". With the paper's generator f, "js" integrates to
#: :math:`2\,\mathrm{JSD}(P\|Q) = \mathrm{KL}(P\|M) + \mathrm{KL}(Q\|M)`, M = (P + Q)/2
#: (Table 1 writes the JSD with a factor 1/2 that its f does not carry), and "gan",
#: the original GAN's game, to :math:`2\,\mathrm{JSD} - \log 4`.
F_DIVERGENCES = {
    d.name: d for d in (
        FDivergence("kl", lambda u: u * torch.log(u), lambda t: torch.exp(t - 1), lambda v: v,
                    lambda u: 1 + torch.log(u), lambda v: torch.exp(v - 1)),
        FDivergence("reverse-kl", lambda u: -torch.log(u), lambda t: -1 - torch.log(-t),
                    lambda v: -torch.exp(-v), lambda u: -1 / u, lambda v: v - 1),
        FDivergence("pearson", lambda u: (u - 1) ** 2, lambda t: t**2 / 4 + t, lambda v: v,
                    lambda u: 2 * (u - 1), lambda v: v**2 / 4 + v),
        FDivergence("hellinger", lambda u: (torch.sqrt(u) - 1) ** 2, lambda t: t / (1 - t),
                    lambda v: 1 - torch.exp(-v), lambda u: 1 - 1 / torch.sqrt(u), torch.expm1),
        # -log(2 - e^t) and -log(1 - e^t), written to stay finite as t approaches log 2 and 0.
        FDivergence("js", _js_f, lambda t: -_LOG2 - torch.log(-torch.expm1(t - _LOG2)),
                    lambda v: _LOG2 - F.softplus(-v), lambda u: _LOG2 - torch.log1p(1 / u),
                    lambda v: F.softplus(v) - _LOG2),
        FDivergence("gan", _gan_f, lambda t: -torch.log(-torch.expm1(t)), lambda v: -F.softplus(-v),
                    lambda u: -torch.log1p(1 / u), F.softplus),
        FDivergence("tv", lambda u: 0.5 * torch.abs(u - 1), lambda t: t, lambda v: 0.5 * torch.tanh(v),
                    lambda u: 0.5 * torch.sign(u - 1), lambda v: 0.5 * torch.tanh(v)),
    )
}


def gradient_penalty(critic: Callable, real: torch.Tensor, fake: torch.Tensor,
                     eps: torch.Tensor | None = None) -> torch.Tensor:
    """The WGAN-GP penalty (Gulrajani et al., 2017, Algorithm 1), without its weight lambda:

    .. math:: \\mathbb{E}_{\\hat x}\\big(\\|\\nabla_{\\hat x} V(\\hat x)\\|_2 - 1\\big)^2,
              \\qquad \\hat x = \\epsilon x + (1 - \\epsilon) \\tilde x,\\ \\epsilon \\sim U[0, 1]

    per pair of a real x and a generated :math:`\\tilde x`. Differentiable in
    the critic's parameters (the gradient graph is kept).

    Args:
        critic: ``V(x) -> (N,)``.
        real, fake: two batches of the same shape.
        eps: the interpolation weights, shape (N,); drawn uniformly if None.

    Example::

        >>> import torch
        >>> a = torch.tensor([3.0, 4.0])
        >>> float(gradient_penalty(lambda x: x @ a, torch.randn(8, 2), torch.randn(8, 2)))  # (|a| - 1)^2
        16.0
    """
    if real.shape != fake.shape:
        raise ValueError(f"fake: shape {tuple(fake.shape)} differs from that of real, {tuple(real.shape)}")
    n = real.shape[0]
    if eps is None:
        eps = torch.rand(n, device=real.device, dtype=real.dtype)
    eps = eps.reshape(n, *([1] * (real.dim() - 1)))
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    return (_input_grad_norm(critic, x_hat) - 1).pow(2).mean()


def r1_penalty(critic: Callable, real: torch.Tensor) -> torch.Tensor:
    """The R1 penalty (Mescheder et al., 2018, eq. 9), without its weight gamma / 2:

    .. math:: \\mathbb{E}_{x \\sim P}\\,\\|\\nabla_x V(x)\\|_2^2,

    the critic's squared gradient on the data, differentiable in the
    critic's parameters. It keeps the critic flat where the data are, so an
    unbounded loss (an f-GAN's) cannot grow without limit there.

    Example::

        >>> import torch
        >>> a = torch.tensor([3.0, 4.0])
        >>> float(r1_penalty(lambda x: x @ a, torch.randn(8, 2)))  # |a|^2
        25.0
    """
    return _input_grad_norm(critic, real.detach()).pow(2).mean()


def _input_grad_norm(critic, x):
    """Per-example norm of the gradient of V at x, keeping the graph for the critic's parameters."""
    with torch.enable_grad():
        x = x.requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True, materialize_grads=True)
    return grad.reshape(x.shape[0], -1).norm(dim=-1)


class Adversarial(Objective):
    """Train a generator program against a critic, with one of the losses of :data:`LOSSES`.

    Args:
        critic: an ``nn.Module`` ``V(x) -> (N,)`` (or ``(N, 1)``), trained in group "critic".
        loss: "minimax" (the saturating game of Goodfellow et al., 2014),
            "ns" (its non-saturating generator loss), "f-gan", "wgan",
            "wgan-gp" or "hinge"; the module's docstring gives each pair of losses.
        divergence: with ``loss="f-gan"`` only: a key of :data:`F_DIVERGENCES`.
        n_critic: critic updates per generator update; default 5 for "wgan"
            and "wgan-gp", else 1. ``fit(steps=S)`` counts batches: the critic
            makes S updates and the generator S // n_critic
            (``FitResult.updates``), so a WGAN needs 5 S steps for S generator updates.
        clip: with "wgan": the critic's weights are clipped to [-clip, clip]
            after each of its steps (default 0.01).
        gp_weight: with "wgan-gp": the penalty's weight lambda (default 10).
        nonsaturating: with "f-gan" only: the generator maximizes :math:`\\mathbb{E}_Q\\, g_f(V(x))`
            instead of :math:`\\mathbb{E}_Q f^*(g_f(V(x)))` (Nowozin et al., 2016, section 3.2): the
            same fixed point P = Q, without the exponential of the KL divergence's f*; for
            divergence "gan" it is the "ns" loss.
        r1_weight: with the other losses but "wgan": add the R1 penalty
            :math:`\\tfrac{\\gamma}{2}\\,\\mathbb{E}_P\\|\\nabla V(x)\\|^2` of weight gamma
            (:func:`r1_penalty`; default None, no penalty) to the critic's loss, as term "penalty".
        r1_every: with ``r1_weight``: compute the penalty on one batch in ``r1_every`` only, weighted
            by ``r1_every`` (the lazy regularization of Karras et al., 2020: the same expected
            penalty for a fraction of the double backward's cost); the term is 0 on the other batches.

    The generator's program is ``model(x=None, num_samples=None)`` with a
    site "x" (``pyro_dgm.models.Generator``); its modules form group
    "generator". The critic's loss is a dict of named terms (``real``/``fake``,
    or ``wasserstein``/``penalty``), which ``fit`` records per term.

    Example (an f-GAN for the squared Hellinger distance)::

        >>> import torch, pyro_dgm
        >>> from pyro_dgm.models import MLPGenerator, MLPCritic
        >>> gen, critic = MLPGenerator(2, hidden=(16,)), MLPCritic(2, hidden=(16,))
        >>> obj = Adversarial(critic, loss="f-gan", divergence="hellinger")
        >>> obj
        Adversarial(loss='f-gan', n_critic=1, divergence='hellinger')
        >>> r = pyro_dgm.fit(gen.model, None, torch.randn(64, 2), objective=obj, steps=2, progress=False)
        >>> sorted(r.terms)
        ['critic/fake', 'critic/real']
    """

    def __init__(self, critic: nn.Module, loss: str = "ns", *, divergence: str | None = None,
                 n_critic: int | None = None, clip: float | None = None, gp_weight: float | None = None,
                 nonsaturating: bool = False, r1_weight: float | None = None, r1_every: int = 1):
        if not isinstance(critic, nn.Module):
            raise ValueError(f"critic: expected an nn.Module V(x) -> (N,), got {type(critic).__name__}")
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
        if (loss == "f-gan") != (divergence is not None):
            raise ValueError(f"divergence: loss='f-gan' needs one of {sorted(F_DIVERGENCES)}, and other losses "
                             f"take none; got divergence={divergence!r} with loss={loss!r}")
        if divergence is not None and divergence not in F_DIVERGENCES:
            raise ValueError(f"divergence: expected one of {sorted(F_DIVERGENCES)}, got {divergence!r}")
        self.critic, self.loss_name = critic, loss
        self.divergence = F_DIVERGENCES.get(divergence)
        self.n_critic = _positive_int("n_critic", n_critic, 5 if loss.startswith("wgan") else 1)
        self.clip = _only_with("clip", clip, loss, "wgan", 0.01)
        self.gp_weight = _only_with("gp_weight", gp_weight, loss, "wgan-gp", 10.0)
        if nonsaturating and loss != "f-gan":
            raise ValueError(f"nonsaturating: only used with loss='f-gan' (the 'ns' loss is the original game's), "
                             f"got it with loss={loss!r}")
        self.nonsaturating = bool(nonsaturating)
        if r1_weight is not None and loss.startswith("wgan"):
            raise ValueError(f"r1_weight: not used with loss={loss!r}, whose critic is kept Lipschitz by "
                             f"{'clipping' if loss == 'wgan' else 'its own gradient penalty'}")
        self.r1_weight = None if r1_weight is None else positive("r1_weight", r1_weight)
        self.r1_every = count("r1_every", r1_every)
        if self.r1_every > 1 and r1_weight is None:
            raise ValueError(f"r1_every: only used with r1_weight, got r1_every={r1_every!r} without it")
        self._r1_now = True  # whether this batch's critic loss carries the lazy penalty (set per step)

    # -- the protocol ------------------------------------------------------
    def setup(self, model, guide, batch):
        if guide is not None:
            raise ValueError("guide: a GAN's generator has no guide; pass guide=None")
        self.model, self.guide = model, None
        self._modules = [m for m in program_modules(model, None, batch, self.args) if m is not self.critic]
        if not self._modules:
            raise ValueError("model: the generator program has no parameters: make it an nn.Module, a bound "
                             "method of one (e.g. MLPGenerator(...).model), or register its networks with "
                             "pyro.module(name, net) inside it")
        critic_params = {id(p) for p in self.critic.parameters()}
        if any(id(p) in critic_params for m in self._modules for p in m.parameters()):
            raise ValueError("critic: shares parameters with the generator; keep the critic out of the "
                             "generator module (pyro_dgm.models.GAN holds both)")
        check_batch_shape(model, batch)
        self._refuse_unreparametrized(model, batch)
        fake = self.generate(batch.shape[0], batch)
        if fake.shape != batch.shape:
            raise ValueError(f"data: batch of shape {tuple(batch.shape)} does not match the shape "
                             f"{tuple(fake.shape)} of the generator's site 'x'")
        self._critic_out(batch)

    @property
    def double_backward(self) -> bool:
        """A gradient penalty (wgan-gp, R1) differentiates the critic's gradient."""
        return self.gp_weight is not None or self.r1_weight is not None

    def _refuse_unreparametrized(self, model, batch):
        fn = trace_program(model, batch, *self.args).nodes[self.site]["fn"]
        if not getattr(fn, "has_rsample", False):
            raise ValueError(
                f"model: the generator's site {self.site!r} has no reparametrized sample ({type(fn).__name__}: "
                "has_rsample is False), so no gradient would reach the generator: give the site a Delta "
                "at G(z) (dist.Delta or pyro.deterministic), a Normal, or for binary data a relaxed distribution "
                "(dist.RelaxedBernoulliStraightThrough)")

    def param_groups(self):
        return {"critic": [self.critic], "generator": self._modules}

    def groups_for_step(self, step):
        self._r1_now = step % self.r1_every == 0
        return ["critic", "generator"] if (step + 1) % self.n_critic == 0 else ["critic"]

    def loss(self, group, batch):
        if group == "critic":
            with torch.no_grad():
                fake = self.generate(batch.shape[0], batch)
            return self.critic_loss(batch, fake)
        return self.generator_loss(self.generate(batch.shape[0], batch))

    def after_step(self, group):
        if group == "critic" and self.loss_name == "wgan":
            with torch.no_grad():
                for p in self.critic.parameters():
                    p.clamp_(-self.clip, self.clip)

    # -- the losses ----------------------------------------------------------
    def generate(self, n: int, like: torch.Tensor | None = None) -> torch.Tensor:
        """n samples of the generator's data site (differentiable in its parameters).

        A program ``model(x)`` without ``num_samples`` runs on ``like`` (the
        real batch) with its data site unconditioned.
        """
        return self.sample(self.model, n, like=like)

    def critic_loss(self, real: torch.Tensor, fake: torch.Tensor) -> dict:
        """The critic's loss on a batch of data and a batch of samples, as named terms."""
        v_real, v_fake = self._critic_out(real), self._critic_out(fake)
        name = self.loss_name
        if name in ("minimax", "ns"):
            terms = {"real": F.softplus(-v_real).mean(), "fake": F.softplus(v_fake).mean()}
        elif name == "f-gan":
            d = self.divergence
            terms = {"real": -d.activation(v_real).mean(), "fake": d.conjugate_activation(v_fake).mean()}
        elif name == "hinge":
            terms = {"real": F.relu(1 - v_real).mean(), "fake": F.relu(1 + v_fake).mean()}
        else:
            terms = {"wasserstein": v_fake.mean() - v_real.mean()}
        if self.r1_weight is not None:
            terms["penalty"] = (0.5 * self.r1_weight * self.r1_every * r1_penalty(self._critic_out, real)
                                if self._r1_now else real.new_zeros(()))
        if name == "wgan-gp":
            terms["penalty"] = self.gp_weight * gradient_penalty(self._critic_out, real, fake)
        return terms

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """The generator's loss on a batch of its samples (gradients flow through the critic into G)."""
        v = self._critic_out(fake)
        if self.loss_name == "minimax":
            return -F.softplus(v).mean()  # log(1 - sigmoid(v)) = -softplus(v)
        if self.loss_name == "ns":
            return F.softplus(-v).mean()  # -log sigmoid(v)
        if self.loss_name == "f-gan":
            d = self.divergence
            return -(d.activation(v) if self.nonsaturating else d.conjugate_activation(v)).mean()
        return -v.mean()

    def _critic_out(self, x):
        # A conditional critic (``critic.conditional = True``, e.g. a projection critic) also gets the batch's labels.
        v = self.critic(x, *self.args) if self.args and getattr(self.critic, "conditional", False) else self.critic(x)
        if v.numel() != x.shape[0]:
            raise ValueError(f"critic: returned shape {tuple(v.shape)} for a batch of {x.shape[0]}; "
                             "expected one number per example, (N,) or (N, 1)")
        return v.reshape(x.shape[0])

    def __repr__(self):
        extra = {"divergence": self.divergence and self.divergence.name, "clip": self.clip,
                 "gp_weight": self.gp_weight, "nonsaturating": self.nonsaturating or None,
                 "r1_weight": self.r1_weight, "r1_every": self.r1_every if self.r1_every > 1 else None}
        shown = "".join(f", {k}={v!r}" for k, v in extra.items() if v is not None)
        return f"Adversarial(loss={self.loss_name!r}, n_critic={self.n_critic}{shown})"


def _positive_int(name, value, default):
    if value is None:
        return default
    return count(name, value)


def _only_with(name, value, loss, needs, default):
    if value is not None and loss != needs:
        raise ValueError(f"{name}: only used with loss={needs!r}, got it with loss={loss!r}")
    if loss != needs:
        return None
    return positive(name, default if value is None else value)

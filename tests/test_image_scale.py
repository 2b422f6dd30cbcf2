"""Every image model trains on MNIST-sized (1, 28, 28) and CIFAR-sized (3, 32, 32) images.

Random tensors of those shapes stand in for the data sets (speed and shape
handling do not depend on the pixels). Each model is small (widths set by
its constructor), fitted for a few steps on one fixed batch repeated, so
its loss must fall; then it draws samples, checked for shape and range.
``benchmarks/image_scale.py`` builds the same models (wider) from ``CASES``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch

import pyro_dgm
from pyro_dgm.inference import Adversarial
from pyro_dgm.inference.score_based import geometric_sigmas
from pyro_dgm.models import (NCSN, ConvVAE, DCGANCritic, DCGANGenerator, GAN, GatedPixelCNN, Glow, IResNet,
                             MultiScaleRealNVP, PixelCNN, ScoreUNet)
from pyro_dgm.samplers import AnnealedLangevin

SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}
LEVELS = 256  # grey levels of 3-channel images for the discretized logistic mixture


@dataclass
class Case:
    """How to build, fit and check one image model at one shape."""

    build: Callable  # build(shape, width) -> module with .model (and .guide)
    data: str  # "binary", "levels" (0..255), "unit" (dequantized, [0, 1))
    check: Callable  # check(samples) -> bool: the samples' range
    objective: Callable | None = None  # objective(module) -> Objective
    fit_kwargs: dict = field(default_factory=dict)
    flat: bool = False  # the model takes (N, C*H*W)


def _pixelcnn_output(shape):
    """Bernoulli for 1-channel (binarized MNIST), a logistic mixture over 256 levels for 3 channels."""
    if shape[0] == 1:
        return {"output": "bernoulli"}
    return {"output": "logistic_mixture", "num_levels": LEVELS, "num_components": 2}


def _data_kind(shape, binary_if_grey=True):
    return "binary" if shape[0] == 1 and binary_if_grey else "levels"


def _is_binary(x):
    return bool(((x == 0) | (x == 1)).all())


def _is_levels(x):
    return bool((x == x.round()).all() and x.min() >= 0 and x.max() <= LEVELS - 1)


def _in_unit(x):
    return bool(((x >= 0) & (x <= 1)).all())


def _in_logit_domain(x, alpha=0.05):
    """The flows' first LogitTransform(alpha) maps (-a, 1 + a), a = alpha / (1 - 2 alpha), onto the reals."""
    a = alpha / (1 - 2 * alpha)
    return bool(((x > -a) & (x < 1 + a)).all())


def _finite(x):
    return bool(torch.isfinite(x).all())


def _autoregressive_check(x):
    return _is_binary(x) if x.shape[1] == 1 else _is_levels(x)


def _vae_check(x):
    return _is_binary(x) if x.shape[1] == 1 else _finite(x)


def _ncsn(shape, width):
    sigmas = geometric_sigmas(2.0, 0.05, 4)
    net = ScoreUNet(shape, channels=width, embed_dim=16)
    return NCSN(shape, net, sigmas=sigmas, sampler=AnnealedLangevin(sigmas, steps_per_level=2))


def _dcgan(shape, width):
    return GAN(DCGANGenerator(shape, latent_dim=8, channels=width), DCGANCritic(shape, channels=width))


CASES = {
    "pixelcnn": Case(lambda s, w: PixelCNN(s, hidden=w, num_layers=2, kernel_size=5, **_pixelcnn_output(s)),
                     "binary/levels", _autoregressive_check),
    "gated-pixelcnn": Case(lambda s, w: GatedPixelCNN(s, hidden=w, num_layers=2, kernel_size=5,
                                                      **_pixelcnn_output(s)),
                           "binary/levels", _autoregressive_check),
    "conv-vae": Case(lambda s, w: ConvVAE(s, latent_dim=4, channels=(w, 2 * w),
                                          likelihood="bernoulli" if s[0] == 1 else "gaussian"),
                     "binary/unit", _vae_check),
    "realnvp-image": Case(lambda s, w: MultiScaleRealNVP(s, num_scales=2, hidden=w, couplings=1), "unit",
                          _in_logit_domain),
    "glow": Case(lambda s, w: Glow(s, levels=2, steps=1, hidden=w), "unit", _in_logit_domain),
    "iresnet": Case(lambda s, w: IResNet(s[0] * s[1] * s[2], num_blocks=1, hidden=(w,), logit=0.05, num_terms=2),
                    "unit", _in_logit_domain, flat=True),
    "dcgan": Case(_dcgan, "unit", _in_unit, objective=lambda m: Adversarial(m.critic),
                  fit_kwargs={"lr": {"generator": 2e-3, "critic": 2e-3}}),
    "ncsn": Case(_ncsn, "unit", _finite),
}


def make_data(case: Case, shape, n: int, seed: int = 0) -> torch.Tensor:
    """Random images of ``shape`` in the case's data kind."""
    g = torch.Generator().manual_seed(seed)
    kinds = case.data.split("/")
    kind = kinds[0] if shape[0] == 1 else kinds[-1]
    if kind == "binary":
        x = torch.bernoulli(torch.full((n, *shape), 0.3), generator=g)
    elif kind == "levels":
        x = torch.randint(0, LEVELS, (n, *shape), generator=g).float()
    else:
        x = (torch.randint(0, LEVELS, (n, *shape), generator=g) + torch.rand(n, *shape, generator=g)) / LEVELS
    return x.reshape(n, -1) if case.flat else x


def fit_case(case: Case, module, x, steps: int, **kwargs):
    """fit on one fixed batch: every step sees all of ``x``."""
    objective = case.objective(module) if case.objective is not None else None
    options = {"lr": 3e-3, **case.fit_kwargs, **kwargs}
    return pyro_dgm.fit(module.model, getattr(module, "guide", None), x, objective=objective, steps=steps,
                        batch_size=x.shape[0], shuffle=False, progress=False, **options)


def _falls(losses, k=3):
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    return first > last


@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("name", list(CASES))
def test_image_model_trains_and_samples(name, shape_name):
    torch.manual_seed(0)
    case, shape = CASES[name], SHAPES[shape_name]
    module = case.build(shape, 6 if name in ("pixelcnn", "gated-pixelcnn") else 8)
    x = make_data(case, shape, 8)
    result = fit_case(case, module, x, steps=12)
    # a GAN's critic learns to tell the fixed batch from fakes; its generator's loss need not fall
    group = "critic" if name == "dcgan" else next(iter(result.losses))
    losses = result.losses[group]
    assert all(torch.isfinite(torch.tensor(v)) for v in losses), losses
    assert _falls(losses), (group, losses)
    with torch.no_grad():
        samples = module.sample(2)
    assert samples.shape == x[:2].shape
    assert case.check(samples), (samples.min(), samples.max())


@pytest.mark.parametrize("cls", [PixelCNN, GatedPixelCNN])
def test_256_level_mixture_starts_near_uniform(cls):
    """At 256 levels a fresh logistic mixture spreads over the whole range: about log 256 nats per
    dimension at the start (scales of one level gave about 50), so training starts where it should."""
    torch.manual_seed(0)
    shape = SHAPES["cifar"]
    model = cls(shape, hidden=6, num_layers=2, kernel_size=5, **_pixelcnn_output(shape))
    x = make_data(CASES["pixelcnn"], shape, 4)
    with torch.no_grad():
        per_dim = -float(model.log_prob(x).mean()) / x[0].numel()
    assert per_dim < 1.3 * math.log(LEVELS), per_dim

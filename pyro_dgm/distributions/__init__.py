"""Distributions for site "x" that Pyro and torch do not provide."""

from .autoregressive import AutoregressiveDistribution, DiscretizedLogisticMixture
from .score_field import ScoreField
from .unnormalized import UnnormalizedDistribution

__all__ = ["AutoregressiveDistribution", "DiscretizedLogisticMixture", "UnnormalizedDistribution", "ScoreField"]

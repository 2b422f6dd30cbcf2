"""Model families, each a Pyro program ``model(x=None, num_samples=None)`` with a data site "x".

Importing a family registers its models with :mod:`pyro_dgm.registry` (the CLI reads it).
"""

from . import autoregressive, baselines, conditional, ebm, flows, gan, score, vae
from .autoregressive import *  # noqa: F401,F403
from .base import DistributionModel
from .baselines import DiagonalGaussian, FactorizedBernoulli
from .ebm import *  # noqa: F401,F403
from .flows import *  # noqa: F401,F403
from .gan import *  # noqa: F401,F403
from .score import *  # noqa: F401,F403
from .mixture import Mixture
from .vae import VAE, ConvVAE

__all__ = (["DistributionModel", "FactorizedBernoulli", "DiagonalGaussian", "Mixture", "VAE", "ConvVAE"]
           + autoregressive.__all__ + flows.__all__ + gan.__all__ + ebm.__all__ + score.__all__)

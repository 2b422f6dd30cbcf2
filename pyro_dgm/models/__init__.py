"""Model families, each a Pyro program with a data site "x"."""

from .baselines import DiagonalGaussian, FactorizedBernoulli
from .vae import VAE, ConvVAE

__all__ = ["FactorizedBernoulli", "DiagonalGaussian", "VAE", "ConvVAE"]

# Each family below registers its models with pyro_dgm.registry on import.

"""Samplers: MCMC on a log density (Langevin, MALA, HMC, NUTS) and on a score field (annealed Langevin,
predictor-corrector), with the SDEs they integrate.

``distributions`` and ``inference`` both use these; this package uses neither, so the layers point one way:
``programs``/``checks`` <- ``samplers`` <- ``distributions`` <- ``inference``.
"""

from .annealed import AnnealedLangevin, Langevin, PredictorCorrector, as_sigmas
from .mcmc import SamplerResult, hmc, hmc_step, langevin, mala, mala_step, nuts, score_of
from .sde import VESDE, VPSDE

__all__ = ["langevin", "mala", "mala_step", "hmc", "hmc_step", "nuts", "score_of", "SamplerResult",
           "Langevin", "AnnealedLangevin", "PredictorCorrector", "as_sigmas", "VESDE", "VPSDE"]

"""Objectives (what ``fit`` minimizes) and samplers, for every model family."""

from .adversarial import F_DIVERGENCES, Adversarial, FDivergence, gradient_penalty, r1_penalty
from .contrastive import (ContrastiveDivergence, FlowContrastiveEstimation, NoiseContrastiveEstimation,
                          PersistentContrastiveDivergence, ScoreMatching)
from .likelihood import ELBO, MaximumLikelihood, PyroELBO
from .objective import Objective, data_site, modules_of, sample_program, trace_program
from ..samplers import hmc, langevin, mala, nuts
from .score_based import (VESDE, VPSDE, AnnealedLangevin, DenoisingScoreMatching, Langevin, PredictorCorrector,
                          SDEScoreMatching, SlicedScoreMatching, geometric_sigmas, probability_flow_nll)

__all__ = [
    # the protocol
    "Objective", "modules_of", "trace_program", "data_site", "sample_program",
    # densities
    "ELBO", "MaximumLikelihood", "PyroELBO",
    # GANs
    "Adversarial", "FDivergence", "F_DIVERGENCES", "gradient_penalty", "r1_penalty",
    # energy-based models
    "ContrastiveDivergence", "PersistentContrastiveDivergence", "ScoreMatching",
    "NoiseContrastiveEstimation", "FlowContrastiveEstimation",
    # score-based models
    "DenoisingScoreMatching", "SlicedScoreMatching", "SDEScoreMatching", "VESDE", "VPSDE",
    "Langevin", "AnnealedLangevin", "PredictorCorrector", "geometric_sigmas", "probability_flow_nll",
    # samplers
    "langevin", "mala", "hmc", "nuts",
]

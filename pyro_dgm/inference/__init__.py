"""Objectives (what ``fit`` minimizes) and samplers."""

from .likelihood import ELBO, MaximumLikelihood
from .objective import Objective, data_site, modules_of, sample_program, trace_program

__all__ = ["Objective", "ELBO", "MaximumLikelihood", "modules_of", "trace_program",
           "data_site", "sample_program"]
